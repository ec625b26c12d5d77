"""ELF core files as an AddressSpace: read from a path, or streamed from the
kernel (pipe or socket) keeping only what unwinding needs.

The kernel writes a core front to back: ELF header, program headers, the
PT_NOTE segment (threads' registers, siginfo, auxv, mapped files), then
every PT_LOAD's dumped bytes in address order. So one pass can read the
notes, decide which bytes to keep (each thread's stack window, the vdso,
small anonymous code) and drain the rest without holding it.
"""
from __future__ import annotations

import bisect
import fcntl
import os
import re
import select
import stat
import struct
from dataclasses import dataclass, field

from unwinder.elf import PT_LOAD, PT_NOTE, Segment
from unwinder.regs import NUMBERS
from unwinder.space import Mapping, MapIndex, MemoryFault

from .live import RED_ZONE, merge_spans

ET_CORE, EM_X86_64 = 4, 62
PN_XNUM = 0xFFFF
NT_PRSTATUS, NT_PRPSINFO, NT_AUXV = 1, 3, 6
NT_SIGINFO, NT_FILE = 0x53494749, 0x46494C45
AT_SYSINFO_EHDR = 33
PF_X, PF_W, PF_R = 1, 2, 4
PYTHON = re.compile(r"/(lib)?python\d\.\d+[^/]*$")  # python3.12, libpython3.12.so.1.0
_EHDR = struct.Struct("<4sBB10xHH12xQ16xH")  # magic, class, data, type, machine, phoff, phnum
_PHDR = struct.Struct("<IIQQ8xQQ8x")          # type, flags, offset, vaddr, filesz, memsz
# Most a note of each kind may hold (NT_FILE: the kernel caps it at 16 MiB).
NOTE_LIMITS = {NT_PRSTATUS: 4096, NT_PRPSINFO: 4096, NT_SIGINFO: 4096, NT_AUXV: 64 << 10,
               NT_FILE: 16 << 20}
MAX_THREADS = 16384
SMALL_CODE = 1 << 20        # anonymous executable segments kept up to this size (JIT code)
DEFAULT_STACK_WINDOW = 256 << 10
DEFAULT_KEEP = 32 << 20     # bytes of the core kept in memory in all
CHUNK = 1 << 20

# struct elf_prstatus: pr_pid at 32, pr_reg (struct user_regs_struct) at 112
_PR_REG_NAMES = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
                 "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp")
_PRSTATUS = struct.Struct("<iiih2x16xiiii64x" + "Q" * len(_PR_REG_NAMES))
# struct elf_prpsinfo: state, sname, zomb, nice, flag, uid, gid, pid, ppid, pgrp, sid, fname, psargs
_PRPSINFO = struct.Struct("<bcbb4xQIIiiii16s80s")
_SIGINFO = struct.Struct("<iii4xQ")


class CoreError(Exception):
    """The input cannot be read as an x86-64 ELF core (not one, or cut
    inside its headers)."""


class Stalled(Exception):
    """No input for `idle_timeout` seconds."""


@dataclass
class Notes:
    threads: list[tuple[int, dict[int, int]]] = field(default_factory=list)  # dumping thread first
    psinfo: dict | None = None
    siginfo: dict | None = None
    auxv: dict[int, int] = field(default_factory=dict)
    # mapping start -> (end, file offset, path)
    files: dict[int, tuple[int, int, str]] = field(default_factory=dict)


@dataclass
class Layout:
    loads: list[Segment]            # sorted by address
    notes: Notes
    size: int                       # where the last dumped byte ends
    errors: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._starts = [s.vaddr for s in self.loads]

    def is_code(self, addr: int) -> bool:
        seg = self.segment_at(addr)
        return seg is not None and bool(seg.flags & PF_X)

    def segment_at(self, addr: int) -> Segment | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.loads[i].vaddr + self.loads[i].memsz:
            return self.loads[i]
        return None


class Stream:
    """Sequential reads from a pipe, socket or file; waits at most
    `idle_timeout` seconds for each chunk; `pos` counts bytes consumed.
    Bytes skipped on a pipe are spliced to /dev/null, never copied to us."""

    def __init__(self, fd: int, idle_timeout: float):
        self.fd = fd
        self.pos = 0
        self.eof = False
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._timeout_ms = int(idle_timeout * 1000)
        self._scratch: memoryview | None = None
        self._null: int | None = None
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            self._null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            try:  # fewer, larger transfers
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)
            except OSError:
                pass

    def close(self) -> None:
        if self._null is not None:
            os.close(self._null)
            self._null = None

    def _advance(self, n: int) -> int:
        if n == 0:
            self.eof = True
        self.pos += n
        return n

    def _wait(self) -> None:
        if not self._poll.poll(self._timeout_ms):
            raise Stalled(f"no core data for {self._timeout_ms / 1000:g} s at offset {self.pos}")

    def _readinto(self, view: memoryview) -> int:
        self._wait()
        return self._advance(os.readv(self.fd, [view]))

    def read(self, size: int) -> bytearray:
        """`size` bytes, or fewer at the end of the input (read in place: a
        kept range is never copied twice)."""
        buf = bytearray(size)
        with memoryview(buf) as view:
            got = 0
            while got < size and not self.eof:
                got += self._readinto(view[got:])
        del buf[got:]
        return buf

    def skip_to(self, offset: int) -> None:
        while self.pos < offset and not self.eof:
            if self._null is not None:
                self._wait()
                self._advance(os.splice(self.fd, self._null, min(offset - self.pos, 1 << 30)))
                continue
            if self._scratch is None:
                self._scratch = memoryview(bytearray(CHUNK))
            self._readinto(self._scratch[:min(CHUNK, offset - self.pos)])


def read_layout(stream: Stream) -> Layout:
    """Header, program headers and the notes, which the kernel writes first."""
    head = stream.read(_EHDR.size)
    if len(head) < _EHDR.size:
        raise CoreError(f"not an ELF core file: only {len(head)} bytes")
    magic, klass, data, kind, machine, phoff, phnum = _EHDR.unpack(head)
    if magic != b"\x7fELF" or klass != 2 or data != 1:
        raise CoreError("not an ELF core file (no 64-bit little-endian ELF header)")
    if kind != ET_CORE or machine != EM_X86_64:
        raise CoreError(f"not an x86-64 core file (ELF type {kind}, machine {machine})")
    if phnum == PN_XNUM:
        raise CoreError("more than 65534 mappings (PN_XNUM) is not supported")
    if not _EHDR.size <= phoff <= 1 << 20:
        raise CoreError(f"program headers at an odd offset {phoff:#x}")
    stream.skip_to(phoff)
    table = stream.read(phnum * _PHDR.size)
    if len(table) < phnum * _PHDR.size:
        raise CoreError(f"the core ends inside its program headers (at {stream.pos} bytes)")
    segments = [Segment(*row) for row in _PHDR.iter_unpack(table)]
    layout = Layout(sorted((s for s in segments if s.type == PT_LOAD), key=lambda s: s.vaddr),
                    Notes(), max((s.offset + s.filesz for s in segments), default=0))
    for seg in sorted((s for s in segments if s.type == PT_NOTE), key=lambda s: s.offset):
        if seg.offset < stream.pos:
            layout.errors.append(f"note segment at {seg.offset:#x} overlaps the headers")
            continue
        _read_notes(stream, seg, layout)
    return layout


def _read_notes(stream: Stream, seg: Segment, layout: Layout) -> None:
    end = seg.offset + seg.filesz
    stream.skip_to(seg.offset)
    while stream.pos + 12 <= end:
        head = stream.read(12)
        if len(head) < 12:
            break
        namesz, descsz, kind = struct.unpack("<III", head)
        desc_at = stream.pos + _align4(namesz)
        desc_end = desc_at + _align4(descsz)
        if desc_end > end:
            layout.errors.append(f"note of type {kind:#x} at {stream.pos - 12:#x} runs past "
                                 "its segment: the rest of the notes are garbage")
            break
        name = stream.read(_align4(namesz))[:namesz].rstrip(b"\0")
        if name == b"CORE" and kind in NOTE_LIMITS and descsz <= NOTE_LIMITS[kind]:
            desc = stream.read(descsz)
            if len(desc) == descsz:
                try:
                    _take_note(kind, desc, layout.notes)
                except (struct.error, ValueError, IndexError) as e:
                    layout.errors.append(f"note of type {kind:#x} is malformed: {e}")
        stream.skip_to(desc_end)
    if stream.pos < end:
        layout.errors.append(f"the core ends inside its notes (at {stream.pos} of {end} bytes)")


def _take_note(kind: int, desc: bytes, notes: Notes) -> None:
    if kind == NT_PRSTATUS:
        if len(notes.threads) < MAX_THREADS:
            _, _, _, _, pid, _, _, _, *values = _PRSTATUS.unpack_from(desc)
            regs = {NUMBERS[n]: v for n, v in zip(_PR_REG_NAMES, values) if n in NUMBERS}
            notes.threads.append((pid, regs))
    elif kind == NT_PRPSINFO:
        *_, uid, gid, pid, ppid, _, _, fname, psargs = _PRPSINFO.unpack_from(desc)
        notes.psinfo = {"pid": pid, "ppid": ppid, "uid": uid, "gid": gid,
                        "name": _text(fname), "args": _text(psargs)}
    elif kind == NT_SIGINFO:
        signo, _, code, addr = _SIGINFO.unpack_from(desc)
        notes.siginfo = {"signo": signo, "code": code, "addr": addr}
    elif kind == NT_AUXV:
        words = struct.unpack_from(f"<{len(desc) // 8}Q", desc)
        notes.auxv = dict(zip(words[0::2], words[1::2]))
    elif kind == NT_FILE:
        count, page = struct.unpack_from("<QQ", desc)
        if 16 + count * 24 > len(desc):
            raise ValueError(f"{count} entries do not fit in {len(desc)} bytes")
        names = desc[16 + count * 24:].split(b"\0")
        for i in range(count):
            start, end, pgoff = struct.unpack_from("<QQQ", desc, 16 + i * 24)
            path = names[i].decode("utf-8", "replace") if i < len(names) else ""
            notes.files[start] = (end, pgoff * page, path)


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def wanted_ranges(layout: Layout, stack_window: int,
                  keep: int) -> tuple[list[tuple[int, int]], list[str]]:
    """Core-file (offset, size) ranges to keep from a stream, within `keep`
    bytes: the dumping thread's stack window first, the vdso, the other
    threads' stacks sharing what is left, then small anonymous code, then
    for a CPython process its writable memory (for its Python frames)."""
    spans: list[tuple[int, int]] = []
    left = keep

    def take(lo: int, hi: int, at: int | None = None) -> None:
        """[lo, hi) clipped to the dumped part of the segment holding `at`."""
        nonlocal left
        seg = layout.segment_at(lo if at is None else at)
        if seg is None:
            return
        lo, hi = max(lo, seg.vaddr), min(hi, seg.vaddr + seg.filesz, lo + left)
        if hi > lo:
            spans.append((seg.offset + lo - seg.vaddr, seg.offset + hi - seg.vaddr))
            left -= hi - lo

    def take_stack(regs: dict[int, int], window: int) -> None:
        sp = regs.get(NUMBERS["rsp"], 0)
        take(sp - RED_ZONE, sp + window, at=sp)

    threads = layout.notes.threads
    vdso = layout.notes.auxv.get(AT_SYSINFO_EHDR)
    if threads:
        take_stack(threads[0][1], stack_window)
    if vdso is not None:
        take(vdso, vdso + SMALL_CODE)
    others = threads[1:]
    for i, (_, regs) in enumerate(others):
        take_stack(regs, min(stack_window, left // (len(others) - i)))
    for seg in layout.loads:
        if seg.flags & PF_X and seg.vaddr not in layout.notes.files and seg.vaddr != vdso \
                and 0 < seg.filesz <= SMALL_CODE:
            take(seg.vaddr, seg.vaddr + seg.filesz)
    errors = []
    if left <= 0:
        errors.append(f"kept only {keep} bytes of stacks and code (--keep): some stack "
                      "windows are shorter than --stack-window")
    if any(PYTHON.search(path) for _, _, path in layout.notes.files.values()):
        # CPython's frames live in its data (_PyRuntime) and heap: the
        # writable segments, file-backed first, as far as `keep` goes
        for seg in sorted((s for s in layout.loads if s.flags & PF_W),
                          key=lambda s: (s.vaddr not in layout.notes.files, s.vaddr)):
            take(seg.vaddr, seg.vaddr + seg.filesz)
    return merge_spans(spans), errors


class CoreSpace:
    """The AddressSpace of a core. Dumped bytes come from `dumped(offset,
    size)` (the core file, or the ranges kept from a stream); file-backed
    bytes the kernel did not dump come from the mapped file."""

    def __init__(self, layout: Layout, dumped, files: dict[int, str], core_fd: int | None = None):
        self.layout = layout
        self._dumped = dumped
        self._files = files          # mapping start -> a path that opens the exact file
        self._core_fd = core_fd      # closed with the space
        self._fds: dict[str, int | None] = {}
        self._maps = self._mappings()
        self._by_addr = MapIndex(self._maps)

    def _mappings(self) -> list[Mapping]:
        files, vdso = self.layout.notes.files, self.layout.notes.auxv.get(AT_SYSINFO_EHDR)
        out = []
        for seg in self.layout.loads:
            perms = "".join(c if seg.flags & bit else "-"
                            for c, bit in (("r", PF_R), ("w", PF_W), ("x", PF_X))) + "p"
            end, offset, path = files.get(seg.vaddr, (0, 0, ""))
            inode, dev = 0, "00:00"
            if path:
                dev, inode = _identity(self._files.get(seg.vaddr) or path)
            elif seg.vaddr == vdso:
                path = "[vdso]"
            out.append(Mapping(seg.vaddr, seg.vaddr + seg.memsz, perms, offset, dev, inode, path))
        return out

    def read(self, addr: int, size: int) -> bytes:
        out = []
        at, end = addr, addr + size
        while at < end:
            seg = self.layout.segment_at(at)
            if seg is None:
                raise MemoryFault(addr, size, "not mapped in the core")
            n = min(end, seg.vaddr + seg.memsz) - at
            data = self._read_in(seg, at, n)
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

    def _read_in(self, seg: Segment, addr: int, n: int) -> bytes | None:
        rel = addr - seg.vaddr
        if rel + n <= seg.filesz:
            return self._dumped(seg.offset + rel, n)
        if rel < seg.filesz:
            return None  # straddles the dumped part: not worth stitching
        mapping = self._by_addr.find(addr)
        if mapping is None or not mapping.is_file:
            return None
        fd = self._fd(self.file_for(mapping) or mapping.path)
        if fd is None:
            return None
        try:
            return os.pread(fd, n, mapping.offset + rel)
        except OSError:
            return None

    def _fd(self, path: str) -> int | None:
        if path not in self._fds:
            try:
                self._fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
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
        if mapping.start in self._files:
            return self._files[mapping.start]
        return None if mapping.path.endswith(" (deleted)") else mapping.path or None


def _identity(path: str) -> tuple[str, int]:
    """NT_FILE carries no device or inode: take them from the file, or a
    non-zero placeholder so the mapping still counts as file-backed."""
    try:
        st = os.stat(path)
    except OSError:
        return "00:00", 1
    return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}", st.st_ino


def open_file(path: str) -> tuple[CoreSpace, int]:
    """A core file on disk; its dumped bytes are read on demand. Returns the
    space and the file's size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CoreError(f"cannot open {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CoreError("not a regular file")
    size = st.st_size
    try:
        layout = read_layout(Stream(fd, idle_timeout=60))
    except CoreError:
        os.close(fd)
        raise
    if size < layout.size:
        layout.errors.append(f"the core is truncated: {size} of {layout.size} bytes")

    def dumped(offset: int, n: int) -> bytes | None:
        return os.pread(fd, n, offset) if offset + n <= size else None

    return CoreSpace(layout, dumped, {}, fd), size


@dataclass
class Streamed:
    space: CoreSpace | None
    layout: Layout | None
    bytes_read: int
    bytes_kept: int
    errors: list[str]


def stream(fd: int, stack_window: int = DEFAULT_STACK_WINDOW, keep: int = DEFAULT_KEEP,
           idle_timeout: float = 30.0, files=None) -> Streamed:
    """Read a core from `fd` once, front to back, keeping the ranges that
    `wanted_ranges` picks, and drain it to the end. `files(layout)`, called
    as soon as the notes are read (the kernel still holds the process),
    returns mapping start -> a path opening the exact file (e.g.
    /proc/self/fd/N opened through map_files)."""
    s = Stream(fd, idle_timeout)
    errors: list[str] = []
    layout = None
    opened: dict[int, str] = {}
    kept: list[tuple[int, bytearray]] = []
    try:
        layout = read_layout(s)
        opened = files(layout) if files else {}
        ranges, why = wanted_ranges(layout, stack_window, keep)
        errors += why
        for offset, size in ranges:
            s.skip_to(offset)
            data = s.read(size)
            if data:
                kept.append((offset, data))
        s.skip_to(1 << 62)
    except CoreError as e:
        errors.append(str(e))
        _drain(s)
    except Stalled as e:
        errors.append(f"the core stopped arriving: {e}")
    except OSError as e:
        errors.append(f"reading the core failed at offset {s.pos}: {e.strerror}")
    finally:
        s.close()
    if layout is None:
        return Streamed(None, None, s.pos, 0, errors)
    if s.pos < layout.size:
        errors.append(f"the core ended early: {s.pos} of {layout.size} bytes arrived")
    starts = [o for o, _ in kept]

    def dumped(offset: int, n: int) -> bytes | None:
        i = bisect.bisect_right(starts, offset) - 1
        if i >= 0:
            start, data = kept[i]
            if offset + n <= start + len(data):
                return data[offset - start:offset - start + n]
        return None

    space = CoreSpace(layout, dumped, opened)
    return Streamed(space, layout, s.pos, sum(len(d) for _, d in kept), layout.errors + errors)


def drain(fd: int, idle_timeout: float = 30.0) -> None:
    """Read `fd` to its end (the kernel waits for a handler to take the whole core)."""
    s = Stream(fd, idle_timeout)
    try:
        _drain(s)
    finally:
        s.close()


def _drain(s: Stream) -> None:
    try:
        s.skip_to(1 << 62)
    except (Stalled, OSError):
        pass
