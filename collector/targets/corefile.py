"""ELF core files: the layout (segments, notes: threads' registers,
siginfo, auxv, mapped files; the formats are in corehead.py) and the AddressSpace of a core, whether read
from a path or kept from the kernel's stream (stream.py).

The kernel writes a core front to back: ELF header, program headers, the
PT_NOTE segment, then every PT_LOAD's dumped bytes in address order, so the
layout is read with one sequential pass.
"""
from __future__ import annotations

import bisect
import os
import struct

from unwinder.elf import ElfError, ElfFile, Segment
from unwinder.files import open_regular
from unwinder.regs import NUMBERS
from unwinder.space import Mapping, MapIndex, MemoryFault, read_u64

from .corehead import (AT_SYSINFO_EHDR, NOTE_ERRORS, NT_AUXV, NT_FILE, NT_PRPSINFO,
                       NT_PRSTATUS, NT_SIGINFO, PR_REG_NAMES, PT_LOAD, PT_NOTE, auxv,
                       notes, nt_file, program_headers, prpsinfo, prstatus, siginfo)
from .locate import PAGE, Where, locate
from .reader import Stream

PF_X, PF_W, PF_R = 1, 2, 4
WINDOW = 1 << 16          # bytes of a stack copy_at reads at once
_U64 = struct.Struct("<Q").unpack_from
MAX_THREADS = 16384
SMALL_CODE = 1 << 20        # anonymous executable segments kept up to this size (JIT code)


class Notes:
    """What the notes say. (Plain classes here, not dataclasses: making a
    dataclass costs about a millisecond at import, as much as reading the
    notes of a core.)"""
    __slots__ = ("threads", "psinfo", "siginfo", "auxv", "files")

    def __init__(self, threads: list[tuple[int, dict[int, int]]] | None = None,
                 psinfo: dict | None = None, siginfo: dict | None = None,
                 auxv: dict[int, int] | None = None,
                 files: dict[int, tuple[int, int, str]] | None = None):
        self.threads = [] if threads is None else threads  # dumping thread first
        self.psinfo = psinfo
        self.siginfo = siginfo
        self.auxv = {} if auxv is None else auxv
        self.files = {} if files is None else files  # mapping start -> (end, file offset, path)


class Layout:
    __slots__ = ("loads", "notes", "size", "errors", "_starts")

    def __init__(self, loads: list[Segment], notes: Notes, size: int,
                 errors: list[str] | None = None):
        self.loads = loads              # sorted by address
        self.notes = notes
        self.size = size                # where the last dumped byte ends
        self.errors = [] if errors is None else errors
        self._starts = [s.vaddr for s in loads]

    def is_code(self, addr: int) -> bool:
        seg = self.segment_at(addr)
        return seg is not None and bool(seg.flags & PF_X)

    def segment_at(self, addr: int) -> Segment | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.loads[i].vaddr + self.loads[i].memsz:
            return self.loads[i]
        return None

    def left_out(self, start: int, end: int) -> bool:
        """No PT_LOAD covers any of [start, end): a file mapping gdb's gcore
        did not dump (it writes none for a mapping the process never wrote
        to; the kernel writes an empty one)."""
        return end > start and self.segment_at(start) is None and \
            self.segment_above(start, end - start - 1) is None

    def segment_above(self, addr: int, within: int) -> Segment | None:
        """The first segment starting above `addr`, if no more than `within` away."""
        i = bisect.bisect_right(self._starts, addr)
        if i < len(self.loads) and self.loads[i].vaddr - addr <= within:
            return self.loads[i]
        return None


def read_layout(stream: Stream) -> Layout:
    """Header, program headers and the notes, which the kernel writes first."""
    segments = [Segment(*row) for row in program_headers(stream)]
    layout = Layout(sorted((s for s in segments if s.type == PT_LOAD), key=lambda s: s.vaddr),
                    Notes(), max((s.offset + s.filesz for s in segments), default=0))
    for seg in sorted((s for s in segments if s.type == PT_NOTE), key=lambda s: s.offset):
        if seg.offset < stream.pos:
            layout.errors.append(f"note segment at {seg.offset:#x} overlaps the headers")
            continue
        for kind, desc in notes(stream, seg.offset, seg.filesz, layout.errors):
            try:
                _take_note(kind, desc, layout.notes)
            except NOTE_ERRORS as e:
                layout.errors.append(f"note of type {kind:#x} is malformed: {e}")
    return layout


def _take_note(kind: int, desc: bytes, notes: Notes) -> None:
    if kind == NT_PRSTATUS:
        if len(notes.threads) < MAX_THREADS:
            pid, values = prstatus(desc)
            regs = {NUMBERS[n]: v for n, v in zip(PR_REG_NAMES, values) if n in NUMBERS}
            notes.threads.append((pid, regs))
    elif kind == NT_PRPSINFO:
        notes.psinfo = prpsinfo(desc)
    elif kind == NT_SIGINFO:
        notes.siginfo = siginfo(desc)
    elif kind == NT_AUXV:
        notes.auxv = auxv(desc)
    elif kind == NT_FILE:
        notes.files.update(nt_file(desc))


class CoreSpace:
    """The AddressSpace of a core. Dumped bytes come from `dumped_from(offset,
    limit)`: those from `offset` on, up to `limit` of them, as many as there
    are at hand (the core file, or the ranges kept from a stream; b"" for
    none); file-backed bytes the kernel did not dump come from the mapped
    file."""

    def __init__(self, layout: Layout, dumped_from, files: dict[int, str],
                 core_fd: int | None = None, where: Where | None = None):
        self.layout = layout
        self._from = dumped_from
        self._hot: tuple[int, int, bytes] = (1, 0, b"")  # read_u64's: start, last word, data
        self._files = dict(files)    # mapping start -> a path that opens the exact file
        self.found_by = {start: "map_files" for start in files}
        self._core_fd = core_fd      # closed with the space
        self._fds: dict[str, int | None] = {}
        exact = {layout.notes.files[s][2] for s in files if s in layout.notes.files}
        self.located = locate(layout, self.dumped, where or Where(), exact)
        for start, (_, _, path) in layout.notes.files.items():
            if start not in self._files and path in self.located.paths:
                self._files[start] = self.located.paths[path]
                self.found_by[start] = self.located.how[path]
        self._maps = self._mappings()
        self._by_addr = MapIndex(self._maps)

    def _mappings(self) -> list[Mapping]:
        files, vdso = self.layout.notes.files, self.layout.notes.auxv.get(AT_SYSINFO_EHDR)
        out = []
        for seg in self.layout.loads:
            perms = _perms(seg.flags)
            end, offset, path = files.get(seg.vaddr, (0, 0, ""))
            inode, dev = 0, "00:00"
            opened = self._files.get(seg.vaddr)
            if path:
                dev, inode = _identity(opened or path)
                if not path.startswith("/") and self.found_by.get(seg.vaddr) == "core-dir":
                    path = opened  # a relative recorded path, resolved
            elif seg.vaddr == vdso:
                path = "[vdso]"
            out.append(Mapping(seg.vaddr, seg.vaddr + seg.memsz, perms, offset, dev, inode, path))
        return sorted(out + self._left_out(), key=lambda m: m.start)

    def _left_out(self) -> list[Mapping]:
        """The mapped files the core has no PT_LOAD for (Layout.left_out).
        Their permissions are those of the file's own segment at the mapped
        offset; one whose file was not found is left out, as nothing says
        whether it held code."""
        out = []
        for start, (end, offset, path) in self.layout.notes.files.items():
            if not self.layout.left_out(start, end):
                continue
            opened = self._files.get(start)  # as located: checked, and bounded in number
            flags = self._file_flags(opened, offset) if opened else None
            if flags is None:
                continue
            dev, inode = _identity(opened)
            out.append(Mapping(start, end, _perms(flags), offset, dev, inode, path))
        return out

    def _file_flags(self, path: str, offset: int) -> int | None:
        """The flags of the PT_LOAD of ELF file `path` that holds `offset`."""
        fd = self._fd(path)
        try:
            head = os.pread(fd, PAGE, 0) if fd is not None else b""
            seg = ElfFile(head, path).first_load(offset) if head else None
        except (OSError, ElfError):
            return None
        if seg is None or not seg.offset <= offset < seg.offset + max(seg.filesz, 1):
            return None
        return seg.flags

    def read(self, addr: int, size: int) -> bytes:
        out = []
        at, end = addr, addr + size
        while at < end:
            seg = self.layout.segment_at(at)
            if seg is not None:
                n = min(end, seg.vaddr + seg.memsz) - at
                data = self._read_in(seg, at, n)
            else:  # a mapping the core left out (_left_out), or none
                mapping = self._by_addr.find(at)
                if mapping is None:
                    raise MemoryFault(addr, size, "not mapped in the core")
                n = min(end, mapping.end) - at
                data = self._from_file(mapping, at, n)
            if data is None or len(data) != n:
                raise MemoryFault(addr, size, "not in the core")
            out.append(data)
            at += n
        return b"".join(out)

    def dumped(self, addr: int, size: int) -> bytes | None:
        """Bytes the core itself holds at `addr` (never the mapped file's)."""
        seg = self.layout.segment_at(addr)
        if seg is None or addr - seg.vaddr + size > seg.filesz:
            return None
        return self._dumped(seg.offset + addr - seg.vaddr, size)

    def _dumped(self, offset: int, n: int) -> bytes | None:
        data = self._from(offset, n)
        return data if len(data) == n else None

    def copy_at(self, addr: int) -> tuple[int, int, bytes]:
        """(start, end, data): up to WINDOW dumped bytes from `addr` on (a
        walk reads its stack's words from there, unwinder.walk); where the
        core holds none, the page of `addr` with no data."""
        seg = self.layout.segment_at(addr)
        if seg is not None and addr < seg.vaddr + seg.filesz:
            data = self._from(seg.offset + addr - seg.vaddr,
                              min(WINDOW, seg.vaddr + seg.filesz - addr))
            if data:
                return addr, addr + len(data), data
        page = addr & -PAGE
        return page, page + PAGE, b""

    def read_u64(self, addr: int) -> int:
        """unwinder.space.read_u64 of this space, from the window copy_at
        gave last where it holds the word."""
        start, last, data = self._hot
        if not start <= addr <= last:
            start, _, data = self.copy_at(addr)
            last = start + len(data) - 8
            if not start <= addr <= last:
                return read_u64(self, addr)
            self._hot = start, last, data
        return _U64(data, addr - start)[0]

    def _read_in(self, seg: Segment, addr: int, n: int) -> bytes | None:
        rel = addr - seg.vaddr
        if rel + n <= seg.filesz:
            return self._dumped(seg.offset + rel, n)
        if rel < seg.filesz:
            return None  # straddles the dumped part: not worth stitching
        mapping = self._by_addr.find(addr)
        return self._from_file(mapping, addr, n) if mapping is not None else None

    def _from_file(self, mapping: Mapping, addr: int, n: int) -> bytes | None:
        """Bytes the core did not dump, from the file mapped there."""
        path = self.file_for(mapping) if mapping.is_file else None
        fd = self._fd(path) if path else None
        if fd is None:
            return None
        try:
            return os.pread(fd, n, mapping.offset + addr - mapping.start)
        except OSError:
            return None

    def _fd(self, path: str) -> int | None:
        if path not in self._fds:
            try:
                self._fds[path] = open_regular(path)
            except OSError:
                self._fds[path] = None
        return self._fds[path]

    def close(self) -> None:
        for fd in [*self._fds.values(), self._core_fd]:
            if fd is not None:
                os.close(fd)
        self._fds.clear()
        self._core_fd = None

    def maps(self) -> list[Mapping]:
        return list(self._maps)

    def threads(self) -> list[int]:
        return [tid for tid, _ in self.layout.notes.threads]

    def registers(self, tid: int) -> dict[int, int]:
        return next(dict(regs) for t, regs in self.layout.notes.threads if t == tid)

    def file_for(self, mapping: Mapping) -> str | None:
        """The file found for a mapping; None for one that was looked for
        and not found (or refused: another build) and for a deleted file."""
        if mapping.start in self._files:
            return self._files[mapping.start]
        if mapping.path in self.located.why_not or mapping.path.endswith(" (deleted)"):
            return None
        return mapping.path or None


def _perms(flags: int) -> str:
    """A segment's flags as /proc/PID/maps writes them."""
    return "".join(c if flags & bit else "-"
                   for c, bit in (("r", PF_R), ("w", PF_W), ("x", PF_X))) + "p"


def _identity(path: str) -> tuple[str, int]:
    """NT_FILE carries no device or inode: take them from the file, or a
    non-zero placeholder so the mapping still counts as file-backed."""
    try:
        st = os.stat(path)
    except OSError:
        return "00:00", 1
    return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}", st.st_ino


def open_core(fd: int, where: Where | None = None) -> tuple[CoreSpace, int]:
    """A core file, open at `fd` (the space owns it from here); its dumped
    bytes are read on demand. Returns the space and the file's size."""
    try:
        size = os.fstat(fd).st_size
        layout = read_layout(Stream(fd, idle_timeout=60))
    except BaseException:
        os.close(fd)
        raise
    if size < layout.size:
        layout.errors.append(f"the core is truncated: {size} of {layout.size} bytes")

    def dumped_from(offset: int, limit: int) -> bytes:
        return os.pread(fd, min(limit, size - offset), offset) if 0 <= offset < size else b""

    return CoreSpace(layout, dumped_from, {}, fd, where), size
