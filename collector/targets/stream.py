"""A core streamed by the kernel to a core_pattern handler (pipe, or the
socket of `collector serve`): read once, front to back, keeping only what
unwinding needs (each thread's stack window, the vdso, small anonymous
code), the rest drained without being held."""
from __future__ import annotations

import bisect
import re

from unwinder.regs import NUMBERS

from . import DEFAULT_KEEP, DEFAULT_STACK_WINDOW, GUARD_GAP, RED_ZONE
from .corefile import AT_SYSINFO_EHDR, PF_W, PF_X, SMALL_CODE, CoreSpace, Layout, read_layout
from .corehead import CoreError
from .locate import PAGE, Where
from .reader import Stalled, Stream

PYTHON = re.compile(r"/(lib)?python\d\.\d+[^/]*$")  # python3.12, libpython3.12.so.1.0


def wanted_ranges(layout: Layout, stack_window: int,
                  keep: int) -> tuple[list[tuple[int, int]], list[str]]:
    """Core-file (offset, size) ranges to keep from a stream, within `keep`
    bytes: the dumping thread's stack window first, the vdso, the other
    threads' stacks sharing what is left, the ELF header pages of files
    holding code, then small anonymous code, then for a CPython process its
    writable memory (for its Python frames)."""
    from .vmread import merge_spans  # here: vmread loads ctypes, which a core file never needs
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
        seg = layout.segment_at(sp) or layout.segment_above(sp, GUARD_GAP)
        if seg is not None:  # a stack overflow faults with rsp in the gap below its stack
            take(max(sp - RED_ZONE, seg.vaddr), sp + window, at=max(sp, seg.vaddr))

    threads = layout.notes.threads
    vdso = layout.notes.auxv.get(AT_SYSINFO_EHDR)
    if threads:
        take_stack(threads[0][1], stack_window)
    if vdso is not None:
        take(vdso, vdso + SMALL_CODE)
    others = threads[1:]
    for i, (_, regs) in enumerate(others):
        take_stack(regs, min(stack_window, left // (len(others) - i)))
    files = layout.notes.files.items()
    code = {path for start, (_, _, path) in files if layout.is_code(start)}
    for start, (_, offset, path) in files:
        if offset == 0 and path in code:  # the build-ids the files found later must have
            take(start, start + PAGE)
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


class Streamed:
    __slots__ = ("space", "layout", "bytes_read", "bytes_kept", "errors")

    def __init__(self, space: CoreSpace | None, layout: Layout | None, bytes_read: int,
                 bytes_kept: int, errors: list[str]):
        self.space, self.layout, self.errors = space, layout, errors
        self.bytes_read, self.bytes_kept = bytes_read, bytes_kept


def stream(fd: int, stack_window: int = DEFAULT_STACK_WINDOW, keep: int = DEFAULT_KEEP,
           idle_timeout: float = 30.0, files=None, where: Where | None = None,
           head: bytes = b"") -> Streamed:
    """Read a core from `fd` once, front to back, keeping the ranges that
    `wanted_ranges` picks, and drain it to the end. `files(layout)`, called
    as soon as the notes are read (the kernel still holds the process),
    returns mapping start -> a path opening the exact file (e.g.
    /proc/self/fd/N opened through map_files); the others are looked for
    as `where` says (locate.py). `head`: the core's first bytes, already
    taken from `fd` (by storm control's look at the notes)."""
    s = Stream(fd, idle_timeout, head)
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

    def dumped_from(offset: int, limit: int) -> bytes:
        i = bisect.bisect_right(starts, offset) - 1
        if i >= 0:
            start, data = kept[i]
            return data[offset - start:offset - start + limit]
        return b""

    space = CoreSpace(layout, dumped_from, opened, where=where)
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
