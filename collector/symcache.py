"""What symbolization found at each address of a module, kept on disk under
the state directory and keyed by build-id, so that a cold run (`collector
attach`, `symbolize`) need not inflate and read a debug file's DWARF again
for addresses seen before (libc's .debug_info alone is ~28 ms to inflate).

An entry holds the symbol table's answer and the DWARF locations at an
address, valid only for the same files: the build-id and a fingerprint of
the section headers of the module and of the file its DWARF came from (a
stripped copy, another debug file, a newer one: another fingerprint). A
file is read only if it is ours, regular, not writable by others and not
too big, and it is checked field by field: anything odd and it is ignored.
Failures to read or write are silent: the cache is only an optimisation.
"""
from __future__ import annotations

import json
import os
import stat

from unwinder.symbols.lines import Location

from .digest import sha256
from .files import own_dir, write_atomic

VERSION = 1
MAX_ADDRESSES = 4096   # per module
MAX_FILE_BYTES = 1 << 20
MAX_FILES = 256        # per directory; the least recently written go first
_NAME_CHARS = set("0123456789abcdef")


def state_dir() -> str | None:
    """The service's systemd StateDirectory= (the first one), if set."""
    value = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return value or None


def fingerprint(*elves) -> str:
    """A digest of the section headers of ELF files (None: no file)."""
    h = sha256()
    for elf in elves:
        h.update(repr(None if elf is None else [
            (s.name, s.type, s.flags, s.offset, s.size) for s in elf.by_index]).encode())
    return h.hexdigest()


class SymbolCache:
    """One directory of <build-id>.json files."""

    def __init__(self, directory: str):
        self.dir = os.path.join(directory, "symbols")

    def _path(self, build_id: str) -> str | None:
        if not build_id or len(build_id) > 128 or not set(build_id) <= _NAME_CHARS:
            return None
        return os.path.join(self.dir, build_id + ".json")

    def load(self, build_id: str, print_: str) -> dict[int, tuple] | None:
        """address -> (symbol or None, [Location, ...]); None if there is no
        usable file for this build and fingerprint."""
        path = self._path(build_id)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() \
                    or st.st_mode & 0o022 or st.st_size > MAX_FILE_BYTES:
                return None
            data = os.read(fd, MAX_FILE_BYTES + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("version") != VERSION \
                    or doc.get("build_id") != build_id or doc.get("fingerprint") != print_:
                return None
            entries = doc["entries"]
            if not isinstance(entries, list) or len(entries) > MAX_ADDRESSES:
                return None
            return dict(_entry(e) for e in entries)
        except (ValueError, TypeError, KeyError, RecursionError):
            return None

    def save(self, build_id: str, print_: str, found: dict[int, tuple]) -> None:
        path = self._path(build_id)
        if path is None or not found:
            return
        entries = [[addr, list(symbol) if symbol else None,
                    [[loc.function, loc.linkage_name, loc.file, loc.line, loc.column]
                     for loc in locations]]
                   for addr, (symbol, locations) in list(found.items())[:MAX_ADDRESSES]]
        data = json.dumps({"version": VERSION, "build_id": build_id, "fingerprint": print_,
                           "entries": entries}, separators=(",", ":")).encode()
        if len(data) > MAX_FILE_BYTES:
            return
        try:
            own_dir(self.dir)
            write_atomic(path, data)
            self._trim()
        except (OSError, ValueError):  # files.UnsafeDirectory is a ValueError
            pass

    def _trim(self) -> None:
        names = [n for n in os.listdir(self.dir) if n.endswith(".json")]
        if len(names) <= MAX_FILES:
            return
        by_age = sorted(names, key=lambda n: _mtime(os.path.join(self.dir, n)))
        for name in by_age[:len(names) - MAX_FILES]:
            try:
                os.unlink(os.path.join(self.dir, name))
            except OSError:
                pass


def _entry(e) -> tuple[int, tuple]:
    """One [address, [name, offset] | null, [[function, linkage, file, line,
    column], ...]] entry, checked; raises TypeError or ValueError."""
    addr, symbol, locations = e
    if type(addr) is not int or addr < 0:
        raise ValueError("address")
    if symbol is not None:
        name, offset = symbol
        if type(name) is not str or type(offset) is not int:
            raise TypeError("symbol")
        symbol = (name, offset)
    out = []
    for function, linkage, file, line, column in locations:
        if not all(v is None or type(v) is str for v in (function, linkage, file)) \
                or not all(v is None or type(v) is int for v in (line, column)):
            raise TypeError("location")
        out.append(Location(function, linkage, file, line, column))
    return addr, (symbol, out)


def _mtime(path: str) -> int:
    try:
        return os.lstat(path).st_mtime_ns
    except OSError:
        return 0
