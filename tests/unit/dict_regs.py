"""cfi.step and cfi.evaluate over registers written {number: value}, as the
tests write them (the engine keeps a frame's in a list, unwinder.regs)."""
from __future__ import annotations

from unwinder import cfi
from unwinder.regs import as_dict, known


def step(row, regs: dict[int, int], read_u64, stack=None) -> tuple[int, dict[int, int]]:
    cfa, caller = cfi.step(row, known(regs), read_u64, stack)
    return cfa, as_dict(caller)


def evaluate(expr: bytes, regs: dict[int, int], read_u64, initial_stack=(), **kw) -> int:
    """Any register number (a frame keeps rax to rip, an expression names more)."""
    return cfi.evaluate(expr, [regs.get(n) for n in range(max(regs, default=-1) + 1)],
                        read_u64, initial_stack, **kw)
