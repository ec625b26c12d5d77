"""The unwind loop: one strategy after another, bounded, each frame tagged
with how it was found (DESIGN.md, "How the engine is written")."""
from __future__ import annotations

import functools
import time

from . import cfi, fallback
from .cfi import CfiError
from .elf import PT_LOAD
from .keep import KEEP_INNER, Elided, Kept
from .modules import MAX_CACHED_PCS, Module, ModuleMap
from .regs import RIP, RSP, known
from .space import AddressSpace, Mapping, MemoryFault, read_u64

MIN_PC = 4096
TIME_BUDGET = 20.0      # seconds of walking per thread


class Frame:
    """One frame of a walk (a plain class: dataclasses cost milliseconds to
    import, and a walk makes one of these per frame)."""
    __slots__ = ("index", "pc", "regs", "sp", "method", "module", "cfa", "signal_frame",
                 "after_signal")

    def __init__(self, index: int, pc: int, regs: list, method: str,
                 module: Module | None = None, cfa: int | None = None,
                 signal_frame: bool = False, after_signal: bool = False):
        self.index = index
        self.pc = pc
        self.regs = regs                # unwinder.regs: a list, None where unknown
        self.sp = regs[RSP]             # None in a caller a strategy could not give one
        self.method = method
        self.module = module
        self.cfa = cfa                  # set once the step out of this frame is computed
        self.signal_frame = signal_frame  # this frame is a signal trampoline
        self.after_signal = after_signal  # the caller of a signal frame: pc is exact

    def __repr__(self) -> str:
        return f"Frame({self.index}, {self.pc:#x}, {self.method}, sp={self.sp and hex(self.sp)})"

    def caller(self, pc: int, regs: list, method: str,
               after_signal: bool = False) -> Frame:
        return Frame(self.index + 1, pc, regs, method, None, None, False, after_signal)

    @property
    def lookup_pc(self) -> int:
        """Where this frame's CFI is looked up (see exact_pc)."""
        return self.pc if self.index == 0 or self.after_signal else self.pc - 1

    @property
    def symbol_pc(self) -> int:
        return symbol_pc(self.pc, self.index, self.after_signal, self.signal_frame)


def exact_pc(index: int, after_signal: bool) -> bool:
    """pc names the instruction after a call in callers: look up pc-1,
    except in frame 0 and in a frame interrupted by a signal."""
    return index == 0 or after_signal


def symbol_pc(pc: int, index: int, after_signal: bool, signal_frame: bool) -> int:
    """Where a frame's function, file and line are looked up: as for CFI,
    but a signal trampoline is entered at its first byte, not returned into
    (its FDE starts a byte early for the CFI lookup at pc-1)."""
    return pc if signal_frame or exact_pc(index, after_signal) else pc - 1


class Trace:
    __slots__ = ("frames", "stop_reason", "errors", "elided", "gap")

    def __init__(self, frames: list[Frame], stop_reason: str, errors: list[str] | None = None,
                 elided: Elided | None = None, gap: int | None = None):
        self.frames = frames            # innermost first; see `elided` for a gap
        self.stop_reason = stop_reason
        self.errors = [] if errors is None else errors
        self.elided = elided            # frames left out before frames[gap]
        self.gap = gap


class Stop(Exception):
    """The root of the stack, or a place no strategy can pass: with a reason."""


class Context:
    """What the strategies of one thread's walk share: the address space,
    modules (files, then unwind info registered at run time) and budgets."""

    def __init__(self, space: AddressSpace, modules: ModuleMap, dynamic=None):
        self.space = space
        self.modules = modules
        self.dynamic = dynamic              # unwinder.dynamic.Registered, or None
        self.maps = modules.index           # shared by the walks of one space's threads
        self.scan_budget = fallback.SCAN_BUDGET
        self.cfi_cfa: int | None = None     # the CFA CFI found for this frame, even if refused
        self.fp_cfa: int | None = None      # rbp + 16, where rbp looked like a frame's head
        self.notes: list[str] = []          # why strategies gave up on this frame
        # read_u64(space, addr), by the space's own where it has one (Snapshot)
        self.read_u64 = getattr(space, "read_u64", None) or functools.partial(read_u64, space)
        self.copy_at = getattr(space, "copy_at", None)  # memory at hand (Snapshot), or None
        self.stack: tuple[int, int, bytes] = (0, 0, b"")  # copy_at's last answer
        self.code_start = self.code_end = 0  # the last executable mapping found
        self.rows = modules.rows            # by_cfi's, shared by the walks of one space's threads

    def mapping(self, addr: int) -> Mapping | None:
        return self.maps.find(addr)

    def is_code(self, addr: int) -> bool:
        # a walk asks about the same few mappings again and again
        if self.code_start <= addr < self.code_end:
            return True
        m = self.maps.find(addr)
        if m is not None and m.executable:
            self.code_start, self.code_end = m.start, m.end
            return True
        return False

    def module_at(self, pc: int) -> Module | None:
        module = self.modules.find(pc)
        if module is None and self.dynamic is not None:
            module = self.dynamic.find(pc)
        return module

    def has_cfi(self, frame: Frame) -> bool:
        module = frame.module
        if module is None or module.image is None or module.bias is None:
            return False
        try:
            return module.image.row_for(module.link(frame.lookup_pc)) is not None
        except CfiError:
            return False

    def code_before(self, addr: int, size: int) -> bytes | None:
        """Up to `size` bytes before `addr` in its mapping: from the module's
        file (no read of a released process; a core need not hold its text),
        else from memory (code no file backs)."""
        m = self.maps.find(addr - 1)
        if m is None:
            return None
        size = min(size, addr - m.start)
        module = self.modules.find(addr - 1)
        if module is not None and module.image is not None and module.bias is not None:
            end, elf = module.link(addr), module.image.elf
            for seg in elf.segments:
                if seg.type == PT_LOAD and seg.vaddr < end <= seg.vaddr + seg.filesz:
                    start = max(end - size, seg.vaddr)
                    return bytes(elf.data[seg.offset + start - seg.vaddr:
                                          seg.offset + end - seg.vaddr])
        try:
            return self.space.read(addr - size, size)
        except MemoryFault:
            return None


def by_cfi(frame: Frame, ctx: Context) -> Frame | None:
    module = frame.module
    if module is None:
        return None
    pc = frame.pc if frame.index == 0 or frame.after_signal else frame.pc - 1
    found = ctx.rows.get(pc)  # deep recursion asks for the same few rows again and again
    if found is not None and found[0] is module:
        _, row, method = found
    else:
        image = module.image
        if image is None:
            return None
        row = image.row_for(module.link(pc))
        if row is None:
            return None
        # images of code registered at run time may say their rows are no DWARF
        method = getattr(image, "method", "cfi")
        if len(ctx.rows) > MAX_CACHED_PCS:
            ctx.rows.clear()
        ctx.rows[pc] = (module, row, method)  # rows found only: a lookup that failed says so again
    signal = frame.signal_frame = row.signal_frame
    stack = ctx.stack   # the words step() reads, at hand
    if not stack[0] <= frame.sp < stack[1] and ctx.copy_at is not None:
        stack = ctx.stack = ctx.copy_at(frame.sp)
    try:
        cfa, caller = cfi.step(row, frame.regs, ctx.read_u64, stack)
    except MemoryFault as e:
        ctx.notes.append(f"cannot read the caller's registers: {e}")
        return None
    except CfiError as e:
        ctx.notes.append(f"bad CFI at {frame.pc:#x}: {e}")
        return None
    frame.cfa = ctx.cfi_cfa = cfa
    ra = caller[RIP]
    if ra is None:
        raise Stop("outermost frame (CFI marks the return address undefined)")
    if ra == 0 and not signal:   # a signal may interrupt a NULL call
        raise Stop("outermost frame (return address 0)")
    return Frame(frame.index + 1, ra, caller, method, None, None, False, signal)


# each strategy: (Frame, Context) -> Frame | None
STRATEGIES = [by_cfi, fallback.by_dummy_fde, fallback.by_frame_pointer,
                              fallback.by_call_site, fallback.by_scan]


def unwind(space: AddressSpace, modules: ModuleMap, regs: dict[int, int],
           max_frames: int | None = None, dynamic=None,
           time_budget: float = TIME_BUDGET) -> Trace:
    """Walk until the stack ends. Without `max_frames` the walk is bounded by
    the stacks themselves (one frame per 8 bytes of each mapping its sp
    enters) and by `time_budget`; a deep stack keeps the frames keep.Kept
    keeps."""
    if RIP not in regs or RSP not in regs:
        return Trace([], "registers unknown")
    ctx = Context(space, modules, dynamic)
    frame = Frame(0, regs[RIP], known(regs), "context")
    kept, bounds = Kept(), Bounds(ctx, max_frames, time_budget)
    find, keep = modules.find, kept.append
    low = high = limit = 0  # Bounds.check is asked only when its answer may change
    while True:
        module = find(frame.pc)
        if module is None and dynamic is not None:
            module = dynamic.find(frame.pc)
        frame.module = module
        keep(frame)
        count, reason = frame.index + 1, None   # the frames kept.count counts
        if count >= limit or not low <= frame.sp < high or not count % Bounds.EVERY:
            reason = bounds.check(frame.sp, count)
            low, high, limit = bounds.low, bounds.high, bounds.limit
            kept.bound()
        if reason is None:
            try:
                caller = _step(frame, ctx)
                if isinstance(caller, str):
                    reason = caller
                else:
                    frame = caller
            except Stop as stop:
                reason = str(stop)
        if reason is not None:
            frames, elided = kept.result()
            return Trace(frames, reason, elided=elided, gap=KEEP_INNER if elided else None)


class Bounds:
    """Where a walk stops short of the stack's end: at `max_frames`, else
    past one frame per 8 bytes of the stack mappings its sp entered (a frame
    takes at least its return address), or at the end of its time (looked
    at every EVERY frames)."""
    EVERY = 256

    def __init__(self, ctx: Context, max_frames: int | None, time_budget: float):
        self.ctx, self.max_frames, self.time_budget = ctx, max_frames, time_budget
        self.deadline = time.monotonic() + time_budget
        self.room = 1           # frame 0 always tries a step
        self._seen: set[int] = set()
        self.low = self.high = 0    # the last stack mapping counted
        self.limit = self._limit()  # the first count that stops the walk

    def _limit(self) -> int:
        return self.max_frames if self.max_frames is not None else self.room + 1

    def check(self, sp: int, count: int) -> str | None:
        if not self.low <= sp < self.high:
            stack = self.ctx.mapping(sp)
            if stack is not None:
                self.low, self.high = stack.start, stack.end
                if stack.start not in self._seen:
                    self._seen.add(stack.start)
                    self.room += (stack.end - stack.start) // 8
                    self.limit = self._limit()
        if count >= self.limit:
            if self.max_frames is not None:
                return f"frame limit reached ({self.max_frames})"
            return f"more frames than its stacks hold ({count})"
        if count % self.EVERY == 0 and time.monotonic() > self.deadline:
            return f"time budget of {self.time_budget:g} s reached ({count} frames)"
        return None


def _step(frame: Frame, ctx: Context) -> Frame | str:
    """The first caller a strategy finds that passes the progress checks, or
    why there is none. A refused caller (say CFI read a smashed return
    address) lets the next strategy try."""
    ctx.cfi_cfa = ctx.fp_cfa = None
    if ctx.notes:
        ctx.notes = []
    for strategy in STRATEGIES:
        caller = strategy(frame, ctx)
        if caller is None:
            continue
        reason = _refuse(frame, caller, ctx)
        if reason is None:
            return caller
        ctx.notes.append(f"{reason} ({caller.method})")
        frame.cfa = None
    if not ctx.is_code(frame.pc):
        return f"pc {frame.pc:#x} is outside every executable mapping"
    if ctx.notes:
        return ctx.notes[0]
    if frame.module is None:
        return f"no unwind information for pc {frame.pc:#x} (anonymous executable memory)"
    why = f" ({frame.module.error})" if frame.module.error else ""
    return f"no unwind information for pc {frame.pc:#x} in {frame.module.path}{why}"


def _refuse(frame: Frame, caller: Frame, ctx: Context) -> str | None:
    # the pc a signal interrupted is the faulting instruction, wherever it is
    # (a call through NULL); the dummy FDE steps out of it as out of frame 0
    pc, sp = caller.pc, caller.sp
    if not caller.after_signal:
        if pc < MIN_PC:
            return f"return address {pc:#x} is not code"
        if not ctx.code_start <= pc < ctx.code_end and not ctx.is_code(pc):
            return f"return address {pc:#x} is outside every executable mapping"
    if sp is None:
        return "caller's stack pointer unknown"
    # A signal frame may resume on another stack (sigaltstack); elsewhere the
    # stack must grow towards the caller or the walk could loop.
    if frame.signal_frame:
        if sp == frame.sp and pc == frame.pc:
            return "signal frame returns to itself"
    elif sp <= frame.sp:
        return f"stack pointer did not grow ({frame.sp:#x} -> {sp:#x})"
    if caller.method in fallback.GUESSES:
        return fallback.refuse_guess(frame, caller, ctx)
    return None
