"""What to do when CFI is missing or wrong: a synthesized dummy FDE, the
frame-pointer chain, and stack scanning (Breakpad's order and its checks).

Each strategy has by_cfi's signature, `(frame, ctx) -> Frame | None`; the
walk loop refuses a caller whose pc is not code or whose stack did not grow,
and a guessed one (frame pointer, scan) that `refuse_guess` finds against
the code.
"""
from __future__ import annotations

import struct

from . import cfi
from .cfi import CfaRule, CfiError, Row, Rule
from .regs import RBP, RIP, RSP, known
from .space import MemoryFault

# Right after a call: CFA = rsp+8, return address at CFA-8, nothing else saved.
DUMMY_ROW = Row(CfaRule(RSP, 8), ((RIP, Rule(cfi.OFFSET, -8)),), RIP, False, 0, 0)
SCAN_WINDOW = 2048      # bytes scanned for one frame
SCAN_BUDGET = 32 << 10  # bytes scanned for one thread, all frames together
_LONGEST_CALL = 7       # FF /2 with SIB and disp32
MIN_CODE = 4096
MAX_HOPS = 3            # jumps followed from a call's target (PLT stub, thunk)
MAX_BODY = 64 << 10     # bytes of a function searched for its call sites
GUESSES = ("frame_pointer", "scan")


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
    """rbp as the head of a frame chain: (ra, sp, rbp) = (*(rbp+8), rbp+16,
    *rbp), for rbp inside the stack mapping of rsp, at or above rsp and
    aligned, when the saved rbp is 0 (the chain's end) or higher on the same
    stack, or else *(rbp+8) follows a call (a caller that keeps no frame
    pointer: its rbp is any value)."""
    rbp, sp = frame.regs[RBP], frame.sp
    stack = ctx.mapping(sp)
    if rbp is None or rbp % 8 or stack is None or not sp <= rbp <= stack.end - 16:
        return None
    ctx.fp_cfa = rbp + 16
    try:
        saved_rbp, ra = ctx.read_u64(rbp), ctx.read_u64(rbp + 8)
    except MemoryFault:
        return None
    chained = saved_rbp == 0 or (rbp < saved_rbp < stack.end and saved_rbp % 8 == 0)
    if not chained and not returns_after_call(ctx, ra):
        return None
    frame.cfa = rbp + 16
    return frame.caller(ra, known({RIP: ra, RSP: rbp + 16, RBP: saved_rbp}), "frame_pointer")


def by_scan(frame, ctx):
    """The first stack word above sp (above the CFA that CFI computed, if it
    did) that points into code just after a call instruction and that
    refuse_guess does not refuse: (ra, sp) = (*slot, slot + 8)."""
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
        if not returns_after_call(ctx, value):
            continue
        slot = start + 8 * i
        regs = known({RIP: value, RSP: slot + 8})
        rbp = frame.regs[RBP]
        if rbp is not None:
            # the callee pushed rbp just below its return address: take that one
            regs[RBP] = _word(ctx, slot - 8) if rbp == slot - 8 else rbp
        caller = frame.caller(value, regs, "scan")
        if refuse_guess(frame, caller, ctx) is None:
            ctx.scan_budget += 8 * (len(words) - i - 1)   # charge only what was looked at
            frame.cfa = slot + 8
            return caller
    return None


def by_call_site(frame, ctx):
    """A caller whose return address was overwritten, when CFI (else the
    frame pointer) still gave the callee's CFA: the first return address
    above the CFA that scan would take, but whose direct call targets T, not
    the callee, is the grandcaller; if T holds exactly one direct call to the
    callee's function, T is the caller: (pc, sp) = (the end of that call, CFA)."""
    cfa = ctx.cfi_cfa if ctx.cfi_cfa is not None else ctx.fp_cfa
    start = _function_start(frame)
    stack = ctx.mapping(frame.sp)
    if cfa is None or start is None or stack is None:
        return None
    for slot in range(cfa, min(cfa + SCAN_WINDOW, stack.end), 8):
        value = _word(ctx, slot)
        if value is None:
            return None
        if not returns_after_call(ctx, value):
            continue
        target = _direct_call_target(ctx, value)
        if target is None or start in _jump_chain(ctx, target):
            return None     # scan's to take, or to refuse
        sites = _calls_to(ctx, target, start)
        if len(sites) != 1:
            return None
        frame.cfa = cfa     # the callee's saved registers are as smashed as its ra
        return frame.caller(sites[0], known({RIP: sites[0], RSP: cfa}), "scan")
    return None


def _calls_to(ctx, func: int, callee: int) -> list[int]:
    """The return addresses of the direct calls to `callee` (or through a PLT
    stub or thunk leading there) inside the function that starts at `func`."""
    module, mapping = ctx.module_at(func), ctx.mapping(func)
    if module is None or module.image is None or module.bias is None or mapping is None:
        return []
    own = module.image.symbols.lookup(module.link(func))
    if own is None or own[1] != 0:
        return []
    size = min(MAX_BODY, mapping.end - func)
    code = ctx.code_before(func + size, size)
    if code is None:
        return []
    out = []
    for i in range(len(code) - 4):
        if code[i] != 0xE8:
            continue
        ra = func + i + 5
        target = (ra + struct.unpack("<i", code[i + 1:i + 5])[0]) & (2**64 - 1)
        if module.image.symbols.lookup(module.link(ra - 1)) != (own[0], ra - 1 - func):
            break       # past the end of the function
        if callee in _jump_chain(ctx, target):
            out.append(ra)
    return out


def refuse_guess(frame, caller, ctx) -> str | None:
    """Why a guessed caller does not fit the code, or None:
    - the call before its return address, if direct (E8 rel32), targets
      ra + rel32: that, or where a PLT stub or jump thunk there leads, must
      be the start of the function that holds the callee's pc (by symbol);
    - where the caller has CFI, the step out of it must work: CFA above the
      caller's sp, and a return address that is code (or none: the root)."""
    target = _direct_call_target(ctx, caller.pc)
    start = _function_start(frame)
    if target is not None and start is not None and start not in _jump_chain(ctx, target):
        return f"the call before {caller.pc:#x} is to {target:#x}, not to the callee"
    module = ctx.module_at(caller.pc)
    if module is None or module.image is None or module.bias is None:
        return None
    try:
        row = module.image.row_for(module.link(caller.pc - 1))
        if row is None:
            return None
        cfa, regs = cfi.step(row, caller.regs, ctx.read_u64)
    except CfiError:
        return None     # a rule needs a register the guess does not know
    except MemoryFault:
        return f"the CFI of {caller.pc:#x} reads outside memory"
    if cfa <= caller.sp:
        return f"the CFI of {caller.pc:#x} gives a CFA below its sp"
    ra = regs[RIP]
    if ra and not ctx.is_code(ra):
        return f"the CFI of {caller.pc:#x} gives a return address that is not code"
    return None


def _direct_call_target(ctx, ra: int) -> int | None:
    """ra + rel32 when the 5 bytes before ra are E8 rel32, else None."""
    code = ctx.code_before(ra, 5)
    if code is None or len(code) != 5 or code[0] != 0xE8:
        return None
    return (ra + struct.unpack("<i", code[1:])[0]) & (2**64 - 1)


def _function_start(frame) -> int | None:
    """The runtime address of the symbol holding the frame's pc, or None."""
    module = frame.module
    if module is None or module.image is None or module.bias is None:
        return None
    found = module.image.symbols.lookup(module.link(frame.lookup_pc))
    return frame.lookup_pc - found[1] if found else None


def _jump_chain(ctx, addr: int) -> list[int]:
    """addr, then where the jumps at it lead, up to MAX_HOPS: jmp rel32 (E9),
    jmp rel8 (EB), jmp [rip+disp32] (FF 25, a PLT stub's), after an endbr64
    (F3 0F 1E FA) or a bnd prefix (F2)."""
    out = [addr]
    for _ in range(MAX_HOPS):
        code = ctx.code_before(addr + 16, 16)
        if code is None or len(code) < 16:
            break
        i = 4 if code[:4] == b"\xf3\x0f\x1e\xfa" else 0
        i += code[i] == 0xF2
        if code[i] == 0xE9:
            addr += i + 5 + struct.unpack("<i", code[i + 1:i + 5])[0]
        elif code[i] == 0xEB:
            addr += i + 2 + struct.unpack("<b", code[i + 1:i + 2])[0]
        elif code[i:i + 2] == b"\xff\x25":
            slot = addr + i + 6 + struct.unpack("<i", code[i + 2:i + 6])[0]
            addr = _word(ctx, slot & (2**64 - 1))
            if addr is None:
                break
        else:
            break
        addr &= 2**64 - 1
        out.append(addr)
    return out


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
