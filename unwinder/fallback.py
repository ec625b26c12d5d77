"""What to do when CFI is missing or wrong: a synthesized dummy FDE, the
frame-pointer chain, and stack scanning (Breakpad's order and its checks).

Each strategy has by_cfi's signature, `(frame, ctx) -> Frame | None`; the
walk loop refuses a caller whose pc is not code or whose stack did not grow.
"""
from __future__ import annotations

import struct

from . import cfi
from .cfi import CfaRule, Row, Rule
from .regs import RBP, RIP, RSP
from .space import MemoryFault

# Right after a call: CFA = rsp+8, return address at CFA-8, nothing else saved.
DUMMY_ROW = Row(CfaRule(RSP, 8), ((RIP, Rule(cfi.OFFSET, -8)),), RIP, False, 0, 0)
SCAN_WINDOW = 2048      # bytes scanned for one frame
SCAN_BUDGET = 32 << 10  # bytes scanned for one thread, all frames together
_LONGEST_CALL = 7       # FF /2 with SIB and disp32
MIN_CODE = 4096


def by_dummy_fde(frame, ctx):
    """The innermost frame (frame 0, or the one a signal interrupted) when
    its pc is in no executable mapping (a call through a bad pointer), or is
    code without an FDE and [rsp] is a return address."""
    if frame.index > 0 and not frame.after_signal:
        return None
    if ctx.is_code(frame.pc):
        if ctx.has_cfi(frame) or not returns_after_call(ctx, _word(ctx, frame.sp)):
            return None
    try:
        cfa, caller = cfi.step(DUMMY_ROW, frame.regs, ctx.read_u64)
    except MemoryFault:
        return None
    frame.cfa = cfa
    return frame.caller(caller[RIP], caller, "dummy_fde")


def by_frame_pointer(frame, ctx):
    """rbp as the head of a frame chain: inside the stack mapping of rsp, at
    or above rsp, aligned, and its saved rbp either 0 (the chain's end) or
    higher on the same stack."""
    rbp, sp = frame.regs.get(RBP), frame.sp
    stack = ctx.mapping(sp)
    if rbp is None or rbp % 8 or stack is None or not sp <= rbp <= stack.end - 16:
        return None
    try:
        saved_rbp, ra = ctx.read_u64(rbp), ctx.read_u64(rbp + 8)
    except MemoryFault:
        return None
    if saved_rbp != 0 and not (rbp < saved_rbp < stack.end and saved_rbp % 8 == 0):
        return None
    frame.cfa = rbp + 16
    return frame.caller(ra, {RIP: ra, RSP: rbp + 16, RBP: saved_rbp}, "frame_pointer")


def by_scan(frame, ctx):
    """The first stack word above sp (above the CFA that CFI computed, if it
    did) that points into code just after a call instruction."""
    stack = ctx.mapping(frame.sp)
    if stack is None or ctx.scan_budget <= 0:
        return None
    start = frame.sp
    if ctx.cfi_cfa is not None and frame.sp < ctx.cfi_cfa < frame.sp + SCAN_WINDOW:
        start = ctx.cfi_cfa
    start = (start + 7) & ~7
    end = min(stack.end, start + SCAN_WINDOW, start + ctx.scan_budget)
    words = _words(ctx, start, end)
    ctx.scan_budget -= 8 * len(words) or 8
    for i, value in enumerate(words):
        if returns_after_call(ctx, value):
            ctx.scan_budget += 8 * (len(words) - i - 1)   # charge only what was looked at
            slot = start + 8 * i
            regs = {RIP: value, RSP: slot + 8}
            rbp = frame.regs.get(RBP)
            if rbp is not None:
                # the callee pushed rbp just below its return address: take that one
                regs[RBP] = _word(ctx, slot - 8) if rbp == slot - 8 else rbp
                if regs[RBP] is None:
                    del regs[RBP]
            frame.cfa = slot + 8
            return frame.caller(value, regs, "scan")
    return None


def returns_after_call(ctx, addr: int | None) -> bool:
    """`addr` is in an executable mapping and the bytes before it end with a
    call: E8 rel32, or FF /2 in any of its ModRM forms."""
    if addr is None or addr < MIN_CODE or not ctx.is_code(addr - 1):
        return False
    code = ctx.code_before(addr, _LONGEST_CALL)
    if not code:
        return False
    if len(code) >= 5 and code[-5] == 0xE8:
        return True
    for k in range(2, len(code) + 1):
        if code[-k] == 0xFF and (code[-k + 1] >> 3) & 7 == 2 and _ff_length(code[-k:]) == k:
            return True
    return False


def _ff_length(insn: bytes) -> int:
    """Length of an FF opcode with its ModRM, SIB and displacement."""
    modrm = insn[1]
    mod, rm = modrm >> 6, modrm & 7
    if mod == 3:
        return 2
    n = 2
    if rm == 4:
        n += 1
        if mod == 0 and len(insn) > 2 and insn[2] & 7 == 5:
            n += 4
    elif mod == 0 and rm == 5:
        n += 4
    return n + {0: 0, 1: 1, 2: 4}[mod]


def _word(ctx, addr: int) -> int | None:
    try:
        return ctx.read_u64(addr)
    except MemoryFault:
        return None


def _words(ctx, start: int, end: int) -> list[int]:
    """The readable words of [start, end), up to the first that is not."""
    if end <= start:
        return []
    try:
        data = ctx.space.read(start, end - start)
        return list(struct.unpack(f"<{len(data) // 8}Q", data))
    except MemoryFault:
        out = []
        for addr in range(start, end, 8):
            value = _word(ctx, addr)
            if value is None:
                break
            out.append(value)
        return out
