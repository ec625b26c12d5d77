"""The unwind loop: one strategy after another, bounded, each frame tagged
with how it was found (DESIGN.md, "How the engine is written")."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import cfi
from .cfi import CfiError
from .modules import Module, ModuleMap
from .regs import RIP, RSP
from .space import AddressSpace, MemoryFault, read_u64

DEFAULT_MAX_FRAMES = 1024
MIN_PC = 4096


@dataclass
class Frame:
    index: int
    pc: int
    regs: dict[int, int]            # known registers only
    method: str
    module: Module | None = None
    cfa: int | None = None          # set once the step out of this frame is computed
    signal_frame: bool = False      # this frame is a signal trampoline
    after_signal: bool = False      # the caller of a signal frame: pc is exact

    @property
    def sp(self) -> int:
        return self.regs[RSP]

    @property
    def lookup_pc(self) -> int:
        """pc names the instruction after a call in callers: look up pc-1,
        except in frame 0 and in a frame interrupted by a signal."""
        return self.pc if self.index == 0 or self.after_signal else self.pc - 1


@dataclass
class Trace:
    frames: list[Frame]
    stop_reason: str
    errors: list[str] = field(default_factory=list)


class Stop(Exception):
    """The root of the stack, or a place no strategy can pass: with a reason."""


@dataclass
class Context:
    space: AddressSpace
    modules: ModuleMap

    def read_u64(self, addr: int) -> int:
        return read_u64(self.space, addr)


def by_cfi(frame: Frame, ctx: Context) -> Frame | None:
    module = frame.module
    if module is None or module.image is None:
        return None
    link_pc = module.link(frame.lookup_pc)
    row = module.image.row_for(link_pc)
    if row is None:
        return None
    frame.signal_frame = row.signal_frame
    try:
        cfa, caller = cfi.step(row, frame.regs, ctx.read_u64)
    except MemoryFault as e:
        raise Stop(f"cannot read the caller's registers: {e}") from None
    except CfiError as e:
        raise Stop(f"bad CFI at {frame.pc:#x}: {e}") from None
    frame.cfa = cfa
    if RIP not in caller:
        raise Stop("outermost frame (CFI marks the return address undefined)")
    return Frame(frame.index + 1, caller[RIP], caller, "cfi",
                 after_signal=row.signal_frame)


Strategy = Callable[[Frame, Context], "Frame | None"]
STRATEGIES: list[Strategy] = [by_cfi]


def unwind(space: AddressSpace, modules: ModuleMap, regs: dict[int, int],
           max_frames: int = DEFAULT_MAX_FRAMES) -> Trace:
    if RIP not in regs or RSP not in regs:
        return Trace([], "registers unknown")
    ctx = Context(space, modules)
    frame = Frame(0, regs[RIP], dict(regs), "context")
    frames: list[Frame] = []
    while True:
        frame.module = modules.find(frame.pc)
        frames.append(frame)
        if frame.module is None:
            return Trace(frames, f"pc {frame.pc:#x} is outside every executable mapping")
        if len(frames) >= max_frames:
            return Trace(frames, f"frame limit reached ({max_frames})")
        try:
            caller = _step(frame, ctx)
        except Stop as stop:
            return Trace(frames, str(stop))
        if caller is None:
            where = frame.module.path
            why = f" ({frame.module.error})" if frame.module.error else ""
            return Trace(frames, f"no unwind information for pc {frame.pc:#x} in {where}{why}")
        reason = _no_progress(frame, caller)
        if reason:
            return Trace(frames, reason)
        frame = caller


def _step(frame: Frame, ctx: Context) -> Frame | None:
    for strategy in STRATEGIES:
        caller = strategy(frame, ctx)
        if caller is not None:
            return caller
    return None


def _no_progress(frame: Frame, caller: Frame) -> str | None:
    if caller.pc < MIN_PC:
        return "outermost frame (return address 0)" if caller.pc == 0 \
            else f"return address {caller.pc:#x} is not code"
    if RSP not in caller.regs:
        return "caller's stack pointer unknown"
    # A signal frame may resume on another stack (sigaltstack); elsewhere the
    # stack must grow towards the caller or the walk could loop.
    if frame.signal_frame:
        if caller.sp == frame.sp and caller.pc == frame.pc:
            return "signal frame returns to itself"
    elif caller.sp <= frame.sp:
        return f"stack pointer did not grow ({frame.sp:#x} -> {caller.sp:#x})"
    return None
