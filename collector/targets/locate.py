"""Which file here is the one a core mapped, for a core read away from
the machine (or the moment) it was dumped on.

Each file the core names is looked for, in order: the executable given
with --exe; under the sysroot; at its recorded path (a relative one
against the core's directory); beside the core; by build-id in the
debug directories' `.build-id/xx/rest` links; by debuginfod's
`/buildid/ID/executable` (a callable: network I/O is the caller's). The
build-id a candidate must have is the one in the ELF header page the
kernel dumped of that file (coredump_filter bit 4, on by default): a
candidate of another build is refused and said so. Where the core holds
no header page, a file at its recorded place (or the sysroot's, or
--exe) is taken unchecked: nothing says it is the wrong one.
"""
from __future__ import annotations

import os

from unwinder.debuginfo import debug_dirs, is_build_id
from unwinder.elf import ElfError, ElfFile
from unwinder.modules import load_elf

PAGE = 4096
AT_ENTRY = 9
MAX_FILES = 4096  # distinct paths looked for; a core naming more is garbage


class Where:
    """Where to look besides the recorded paths (all optional). Plain
    classes here: dataclasses (with inspect) and typing cost a cold `core
    FILE` 15 ms, more than reading the core."""
    __slots__ = ("exe", "sysroot", "core_dir", "fetch")

    def __init__(self, exe: str | None = None, sysroot: str | None = None,
                 core_dir: str | None = None, fetch=None):
        self.exe = exe
        self.sysroot = sysroot
        self.core_dir = core_dir
        self.fetch = fetch      # build-id -> a local path or None


class Found:
    __slots__ = ("paths", "how", "why_not", "errors")

    def __init__(self):
        self.paths: dict[str, str] = {}     # recorded path -> path to open
        self.how: dict[str, str] = {}       # recorded path -> found_by
        self.why_not: dict[str, str] = {}   # recorded path -> why no file
        self.errors: list[str] = []


def header_build_id(dumped, start: int, path: str) -> str | None:
    """The build-id in the ELF header page the core holds at `start`."""
    page = dumped(start, PAGE)
    try:
        return ElfFile(page, path).build_id() if page else None
    except ElfError:
        return None


def core_build_ids(layout, dumped) -> dict[str, str]:
    """Recorded path -> the build-id its dumped header page carries."""
    out = {}
    for start, (_, offset, path) in layout.notes.files.items():
        if offset == 0 and path not in out:
            bid = header_build_id(dumped, start, path)
            if bid:
                out[path] = bid
    return out


def executable(layout) -> str | None:
    """The recorded path of the file holding the entry point (AT_ENTRY)."""
    entry = layout.notes.auxv.get(AT_ENTRY)
    return next((path for start, (end, _, path) in layout.notes.files.items()
                 if entry is not None and start <= entry < end), None)


def locate(layout, dumped, where: Where, skip: set[str]) -> Found:
    """Files for every recorded path but those in `skip` (opened already,
    exactly, e.g. through /proc/PID/map_files)."""
    found = Found()
    ids = core_build_ids(layout, dumped)
    exe = executable(layout)
    paths = [p for p in dict.fromkeys(p for start, (end, _, p) in layout.notes.files.items()
                                      if layout.is_code(start) or layout.left_out(start, end))
             if p and p not in skip]
    for path in paths[:MAX_FILES]:
        want = ids.get(path)
        tried = []
        for how, candidate in _candidates(path, want, where, path == exe):
            got = _build_id(candidate)
            if got is False:
                continue
            if want and got != want:
                tried.append(f"{how}: {candidate} is another build")
                found.errors.append(f"{candidate}: the file here is not the one that crashed "
                                    f"(build-id {got} here, {want} in the core): not used "
                                    f"for {path}")
                continue
            found.paths[path], found.how[path] = candidate, how
            break
        else:
            found.why_not[path] = (f"no file with the build-id in the core ({want}) found"
                                   if want else "no file found") + \
                (f" ({'; '.join(tried)})" if tried else "")
    return found


def _candidates(path: str, want: str | None, where: Where, is_exe: bool):
    """(found_by, path) in the order they are tried. A file deleted since
    it was mapped is not looked for where it was."""
    deleted = path.endswith(" (deleted)")
    path = path.removesuffix(" (deleted)")
    absolute = path.startswith("/")
    if is_exe and where.exe:
        yield "exe", where.exe
    if where.sysroot and absolute:
        yield "sysroot", os.path.join(where.sysroot, path.lstrip("/"))
    if absolute and not deleted:
        yield "path", path
    elif where.core_dir:
        yield "core-dir", os.path.normpath(os.path.join(where.core_dir, path))
    if not is_build_id(want):
        return  # the rest are guesses, safe only with a build-id to check
    if where.core_dir and absolute:
        yield "core-dir", os.path.join(where.core_dir, os.path.basename(path))
    for d in debug_dirs():
        yield "build-id", f"{d}/.build-id/{want[:2]}/{want[2:]}"
    fetched = where.fetch(want) if where.fetch is not None else None
    if fetched:
        yield "debuginfod", fetched


def _build_id(path: str) -> str | None | bool:
    """The file's build-id; None if it has none (or is no ELF file);
    False if there is no regular file there."""
    if not os.path.isfile(path):
        return False
    elf = load_elf(path)
    if elf is None:
        return None
    try:
        return elf.build_id()
    except ElfError:
        return None
