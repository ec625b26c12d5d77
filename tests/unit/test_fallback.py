"""The fallback strategies over synthetic stacks: dummy FDE, frame-pointer
chain and stack scan, one test per case, and Hypothesis garbage that must
end every walk with a reason, never raise, and stay inside its budgets."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from stacks import (CODE, DATA, STACK_SIZE, STACK_TOP, Code, Stack, binary,  # noqa: F401
                    elf_walk, space, walk)
from unwinder import fallback
from unwinder.modules import ModuleMap
from unwinder.regs import RBP, RBX, RIP, RSP, as_dict
from unwinder.walk import unwind

# call forms the scan must recognise, each followed by the return address
CALLS = {
    "E8 rel32": bytes.fromhex("e8 00 00 00 00"),
    "FF D0 call rax": bytes.fromhex("ff d0"),
    "41 FF D3 call r11": bytes.fromhex("41 ff d3"),
    "FF 15 call [rip+disp32]": bytes.fromhex("ff 15 10 20 00 00"),
    "FF 10 call [rax]": bytes.fromhex("ff 10"),
    "FF 14 24 call [rsp]": bytes.fromhex("ff 14 24"),
    "FF 50 08 call [rax+8]": bytes.fromhex("ff 50 08"),
    "FF 54 24 08 call [rsp+8]": bytes.fromhex("ff 54 24 08"),
    "FF 90 disp32": bytes.fromhex("ff 90 00 01 00 00"),
    "FF 94 24 disp32": bytes.fromhex("ff 94 24 00 01 00 00"),
    "FF 14 25 abs32": bytes.fromhex("ff 14 25 00 10 40 00"),
}
NOT_CALLS = {
    "jmp rax (FF /4)": bytes.fromhex("ff e0"),
    "push [rax] (FF /6)": bytes.fromhex("ff 30"),
    "nops": bytes.fromhex("90 90 90 90 90 90 90"),
    "E8 too early": bytes.fromhex("e8 00 00 00 00 90"),
}


def methods(trace):
    return [f.method for f in trace.frames]


# ------------------------------------------------------------- dummy FDE

def test_call_through_a_garbage_pointer_uses_the_dummy_fde():
    code, stack = Code(), Stack()
    ra = code.call(CALLS["FF D0 call rax"])
    stack.push(0)              # the caller's own frame above
    sp = stack.push(ra)        # what the call pushed
    trace = walk(stack, code, {RIP: 0xDEADBEEF000, RSP: sp, RBX: 7})
    assert methods(trace)[:2] == ["context", "dummy_fde"], trace.stop_reason
    caller = trace.frames[1]
    assert (caller.pc, caller.sp, trace.frames[0].cfa) == (ra, sp + 8, sp + 8)
    assert caller.regs[RBX] == 7          # nothing was saved yet: callee-saved unchanged


def test_null_call_uses_the_dummy_fde():
    code, stack = Code(), Stack()
    sp = stack.push(code.call())
    trace = walk(stack, code, {RIP: 0, RSP: sp})
    assert methods(trace)[:2] == ["context", "dummy_fde"]


def test_code_without_fde_at_its_first_instruction_uses_the_dummy_fde():
    code, stack = Code(), Stack()
    ra = code.call()
    sp = stack.push(ra)
    trace = walk(stack, code, {RIP: CODE + 0x800, RSP: sp})
    assert methods(trace)[:2] == ["context", "dummy_fde"]
    assert trace.frames[1].pc == ra


def test_dummy_fde_needs_a_return_address_at_rsp_in_code_without_fde():
    code, stack = Code(), Stack()
    ra = code.call()
    stack.push(ra)
    sp = stack.push(0x1234)    # a local: [rsp] is no return address
    trace = walk(stack, code, {RIP: CODE + 0x800, RSP: sp})
    assert methods(trace)[:2] == ["context", "scan"]   # the scan finds ra one word up
    assert trace.frames[1].pc == ra and trace.frames[1].sp == sp + 16


def test_dummy_fde_is_only_for_the_innermost_frame():
    code, stack = Code(), Stack()
    ra2 = code.call()
    stack.push(ra2)
    ra1 = code.call()
    sp = stack.push(ra1)
    # frame 1 (in CODE, no FDE) has [rsp] == ra2, but only a scan may use it there
    trace = walk(stack, code, {RIP: 0xDEAD000, RSP: sp})
    assert methods(trace)[:3] == ["context", "dummy_fde", "scan"]


# ---------------------------------------------------------- frame pointer

def fp_chain(depth: int):
    """Frames linked by rbp: each has 2 locals, saved rbp, return address."""
    code, stack = Code(), Stack()
    ras, rbp = [], 0
    stack.push(0)
    for _ in range(depth):
        ra = code.call()
        ras.append(ra)
        stack.push(ra)
        rbp = stack.push(rbp)
        stack.push(0x5555)     # locals that are no return address
        stack.push(0x6666)
    return code, stack, ras[::-1], rbp


def test_frame_pointer_chain_is_followed_to_its_end():
    code, stack, ras, rbp = fp_chain(4)
    trace = walk(stack, code, {RIP: CODE + 0x800, RSP: stack.sp, RBP: rbp})
    assert methods(trace) == ["context"] + ["frame_pointer"] * 4, trace.stop_reason
    assert [f.pc for f in trace.frames[1:]] == ras
    for f in trace.frames[1:]:
        assert set(as_dict(f.regs)) == {RIP, RSP, RBP}   # only what a frame pointer tells
    assert trace.frames[-1].regs[RBP] == 0


@pytest.mark.parametrize("bad", ["misaligned", "below rsp", "outside the stack",
                                 "saved rbp not higher"])
def test_frame_pointer_refuses_what_is_no_chain(bad):
    code, stack, ras, rbp = fp_chain(2)
    sp = stack.sp
    rbp = {"misaligned": rbp + 4, "below rsp": sp - 64, "outside the stack": DATA + 16,
           "saved rbp not higher": None}[bad]
    if rbp is None:        # a frame whose saved rbp points below itself
        rbp = stack.push(sp - 32)
        sp = stack.sp
    s = space(stack, code)
    from unwinder.walk import Context, Frame
    ctx = Context(s, ModuleMap(s))
    frame = Frame(0, CODE + 0x800, {RIP: CODE + 0x800, RSP: sp, RBP: rbp}, "context")
    assert fallback.by_frame_pointer(frame, ctx) is None


# ------------------------------------------------------------------ scan

@pytest.mark.parametrize("form", sorted(CALLS))
def test_scan_recognises_each_call_form(form):
    code, stack = Code(), Stack()
    ra = code.call(CALLS[form])
    stack.push(ra)
    for i in range(5):
        stack.push(CODE + 0x10 + i)    # in code, but not after a call
    stack.push(DATA + 8)
    trace = walk(stack, code, {RIP: CODE + 0x800, RSP: stack.sp})
    assert methods(trace)[:2] == ["context", "scan"], trace.stop_reason
    assert trace.frames[1].pc == ra


@pytest.mark.parametrize("form", sorted(NOT_CALLS))
def test_scan_refuses_what_follows_no_call(form):
    code, stack = Code(), Stack()
    stack.push(code.call(NOT_CALLS[form]))
    trace = walk(stack, code, {RIP: CODE + 0x800, RSP: stack.sp})
    assert len(trace.frames) == 1, methods(trace)


def test_scan_refuses_addresses_outside_executable_mappings():
    code, stack = Code(), Stack()
    stack.push(DATA + 0x10)
    trace = walk(stack, code, {RIP: CODE + 0x800, RSP: stack.sp})
    assert len(trace.frames) == 1


def test_scan_window_is_bounded_per_frame():
    code, stack = Code(), Stack()
    stack.push(code.call())
    for _ in range(fallback.SCAN_WINDOW // 8):
        stack.push(0)
    trace = walk(stack, code, {RIP: CODE + 0x800, RSP: stack.sp})
    assert len(trace.frames) == 1       # the return address is one word past the window


def test_scan_budget_is_bounded_per_thread():
    code, stack = Code(), Stack()
    stack.push(0)
    per_frame = 1000 // 8
    for _ in range(60):                  # 60 frames of 1000 bytes: more than the budget
        stack.push(code.call())
        for _ in range(per_frame):
            stack.push(0)
    trace = walk(stack, code, {RIP: CODE + 0x800, RSP: stack.sp})
    scanned = sum(1 for f in trace.frames if f.method == "scan")
    assert 20 <= scanned <= fallback.SCAN_BUDGET // 1000 + 1, scanned


# ------------------------------------------ CFI first, fallbacks when refused

def test_smashed_return_address_falls_back_to_the_scan_above_the_cfa(binary):
    _, _, sym = binary
    ra = sym["caller"] + 5
    stack = Stack()
    stack.push(0)
    stack.push(ra)                       # an older frame's return address, higher up
    stack.push(0x4141414141414141)       # callee's return address, smashed
    fp = stack.push(0x4141414141414141)  # and its saved rbp
    stack.push(0x2222)
    stack.push(ra)                       # stale, below the CFA: the scan must skip it
    trace = elf_walk(binary, stack, {RIP: sym["callee"] + 9, RSP: stack.sp, RBP: fp})
    assert methods(trace)[:2] == ["context", "scan"], trace.stop_reason
    assert trace.frames[1].pc == ra and trace.frames[1].sp == fp + 24


def test_cfa_that_does_not_grow_lets_the_fallbacks_try(binary):
    _, _, sym = binary
    stack = Stack()
    stack.push(0)
    stack.push(sym["caller"] + 5)
    sp = stack.push(0)
    for _ in range(2):
        stack.push(0)
    # rbp-based CFA far below rsp: CFI's caller would have a lower sp
    low = stack.sp - 0x100
    stack.words[low + 8] = sym["caller"] + 5
    trace = elf_walk(binary, stack, {RIP: sym["callee"] + 9, RSP: stack.sp, RBP: low})
    assert methods(trace)[:2] == ["context", "scan"], trace.stop_reason
    assert trace.frames[1].sp == sp + 16


def test_cfi_return_address_zero_is_the_root_not_a_failure(binary):
    _, _, sym = binary
    stack = Stack()
    stack.push(sym["caller"] + 5)        # would be found by a scan
    stack.push(0)                        # the return address: 0
    trace = elf_walk(binary, stack, {RIP: sym["callee"], RSP: stack.sp})
    assert len(trace.frames) == 1 and trace.stop_reason == "outermost frame (return address 0)"


# --------------------------------------------------------------- garbage

ADDR = st.one_of(st.integers(0, 2**64 - 1),
                 st.integers(STACK_TOP - STACK_SIZE, STACK_TOP + 64),
                 st.integers(CODE - 8, CODE + 0x1008),
                 st.sampled_from([0, 1, 2**64 - 1, 2**64 - 8, 2**63]))


@settings(max_examples=150, deadline=3000,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rip=ADDR, rsp=ADDR, rbp=ADDR, code_bytes=st.binary(min_size=0, max_size=256),
       words=st.dictionaries(st.integers(0, STACK_SIZE // 8 - 1), ADDR, max_size=200))
def test_garbage_never_raises_and_stays_bounded(rip, rsp, rbp, code_bytes, words):
    code, stack = Code(), Stack()
    code.data[:len(code_bytes)] = code_bytes
    stack.words = {STACK_TOP - STACK_SIZE + 8 * i: v for i, v in words.items()}
    s = space(stack, code)
    reads = []
    read = s.read
    s.read = lambda addr, size: reads.append(size) or read(addr, size)
    trace = unwind(s, ModuleMap(s), {RIP: rip, RSP: rsp, RBP: rbp}, max_frames=256)
    assert trace.stop_reason
    assert 1 <= len(trace.frames) <= 256
    sps = [f.sp for f in trace.frames]
    assert sps == sorted(sps) and len(set(sps)) == len(sps)   # no loops: the stack only grows
    # the scans read at most their budget (plus 7 code bytes per candidate checked)
    assert sum(n for n in reads if n > 8 and n != 7) <= fallback.SCAN_BUDGET + fallback.SCAN_WINDOW


# ------------------------------------------ guessed frames checked against the code

def leaf_frame_stack(*above):
    """Frame 0 in leaf (no CFI) with a local at [rsp] (so no dummy FDE) and
    `above` the words over it."""
    stack = Stack()
    for word in reversed(above):
        stack.push(word)
    stack.push(0x1234)
    return stack


@pytest.mark.parametrize("via", ["calls_leaf", "calls_thunk", "calls_stub"])
def test_scan_takes_a_call_that_leads_to_the_callee(binary, via):
    _, _, sym = binary
    stack = leaf_frame_stack(sym[via] + 5)
    trace = elf_walk(binary, stack, {RIP: sym["leaf"] + 1, RSP: stack.sp})
    assert methods(trace)[:2] == ["context", "scan"], trace.stop_reason
    assert trace.frames[1].pc == sym[via] + 5


def test_scan_skips_a_stale_return_address_whose_call_goes_elsewhere(binary):
    _, _, sym = binary
    # calls_other calls calls_leaf, not leaf: left over from an earlier call
    stack = leaf_frame_stack(sym["calls_other"] + 5, sym["calls_leaf"] + 5)
    trace = elf_walk(binary, stack, {RIP: sym["leaf"] + 1, RSP: stack.sp})
    assert methods(trace)[:2] == ["context", "scan"], trace.stop_reason
    assert (trace.frames[1].pc, trace.frames[1].sp) == (sym["calls_leaf"] + 5, stack.sp + 24)


@pytest.mark.parametrize("ra, taken", [("calls_leaf", True), ("calls_other", False)])
def test_frame_pointer_whose_saved_rbp_is_no_frame_pointer(binary, ra, taken):
    _, _, sym = binary
    # [rbp] = 0x1234: a caller that keeps no frame pointer; [rbp+8] the return address
    stack = leaf_frame_stack(0x5555, 0x1234, sym[ra] + 5, 0x6666, sym["calls_leaf"] + 5)
    rbp = stack.sp + 16
    trace = elf_walk(binary, stack, {RIP: sym["leaf"] + 1, RSP: stack.sp, RBP: rbp})
    caller = trace.frames[1]
    if taken:
        assert caller.method == "frame_pointer", trace.stop_reason
        assert (caller.pc, caller.sp, caller.regs[RBP]) == (sym["calls_leaf"] + 5, rbp + 16,
                                                           0x1234)
    else:       # refused: the scan goes on past it to the true return address
        assert caller.method == "scan" and caller.pc == sym["calls_leaf"] + 5
        assert caller.sp == rbp + 32


@pytest.mark.parametrize("grand_ra_is_code", [True, False])
def test_a_guessed_caller_with_cfi_must_step(binary, grand_ra_is_code):
    _, _, sym = binary
    # cfi_caller's CFA is its sp + 16: the return address 16 bytes over the slot
    x = sym["grand"] + 5 if grand_ra_is_code else 0x1234
    stack = leaf_frame_stack(sym["cfi_caller"] + 9, 0x5555, x, sym["calls_leaf"] + 5)
    trace = elf_walk(binary, stack, {RIP: sym["leaf"] + 1, RSP: stack.sp})
    if grand_ra_is_code:
        assert [f.pc for f in trace.frames[1:3]] == [sym["cfi_caller"] + 9, x]
        assert methods(trace)[1:3] == ["scan", "cfi"]
    else:
        assert trace.frames[1].pc == sym["calls_leaf"] + 5, trace.stop_reason


def test_a_caller_whose_return_address_was_overwritten_is_rebuilt(binary):
    _, _, sym = binary
    stack = Stack()
    stack.push(0)
    stack.push(sym["grand"] + 5)            # calls_callee's return address, intact
    stack.push(0x4141414141414141)          # callee's return address, smashed
    fp = stack.push(0x4242424242424242)     # and its saved rbp
    stack.push(0x2222)
    trace = elf_walk(binary, stack, {RIP: sym["callee"] + 9, RSP: stack.sp, RBP: fp})
    assert [f.pc for f in trace.frames[:3]] == [sym["callee"] + 9, sym["calls_callee"] + 5,
                                                sym["grand"] + 5], trace.stop_reason
    assert methods(trace)[:3] == ["context", "scan", "cfi"]
    assert trace.frames[1].sp == fp + 16 and trace.frames[1].regs[RBP] is None
