"""The walk loop over a synthetic stack (FakeSpace) and a real ELF built
from walk_asm.s: one test per instruction boundary of a prologue and an
epilogue, and garbage that must end the walk with a reason, never raise."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from stacks import STACK_TOP, binary, elf_walk as walk  # noqa: F401 (binary: a fixture)
from unwinder.regs import RBP, RBX, RIP, RSP

STACK_SIZE = 0x1000         # where the garbage test puts its words


# (offset in callee, words pushed by then above the return address, rbp == rsp + n?)
PROLOGUE = {
    0: ([], None),
    1: (["rbp"], None),
    4: (["rbp"], 0),
    5: (["rbp", "rbx"], 8),
    9: (["rbp", "rbx", "pad"], 16),
    10: (["rbp", "rbx", "pad"], 16),
    14: (["rbp", "rbx"], 8),
    15: (["rbp"], 0),
    16: ([], None),
}


@pytest.mark.parametrize("offset", sorted(PROLOGUE))
def test_each_instruction_boundary_reaches_the_caller(binary, offset):
    _, _, sym = binary
    pushed, rbp_above_sp = PROLOGUE[offset]
    ra = sym["caller"] + 5  # after the 5-byte call
    saved = {"rbp": 0x1111, "rbx": 0x2222, "pad": 0}
    # popped words stay in memory: the epilogue's CFI still points at them
    words = {STACK_TOP - 8: ra, STACK_TOP - 16: saved["rbp"], STACK_TOP - 24: saved["rbx"]}
    sp = STACK_TOP - 8 - 8 * len(pushed)
    rbp_value = sp + rbp_above_sp if rbp_above_sp is not None else 0x1111
    regs = {RIP: sym["callee"] + offset, RSP: sp, RBP: rbp_value,
            RBX: 0x2222 if "rbx" not in pushed or offset >= 14 else 0x9999}
    trace = walk(binary, words, regs)
    names = [f.method for f in trace.frames]
    assert names == ["context", "cfi"], trace.stop_reason
    caller = trace.frames[1]
    assert caller.pc == ra
    assert caller.sp == STACK_TOP
    assert caller.regs[RBP] == 0x1111
    assert caller.regs[RBX] == 0x2222
    assert trace.frames[0].cfa == STACK_TOP
    assert "undefined" in trace.stop_reason


def test_unknown_registers_stay_unknown(binary):
    _, _, sym = binary
    regs = {RIP: sym["callee"], RSP: STACK_TOP - 8, 0: 5}  # rax is caller-saved
    trace = walk(binary, {STACK_TOP - 8: sym["caller"] + 5}, regs)
    assert trace.frames[1].regs[0] is None


def test_pc_outside_every_mapping_ends_with_a_reason(binary):
    trace = walk(binary, {}, {RIP: 0xDEAD0000, RSP: STACK_TOP - 64})
    assert len(trace.frames) == 1
    assert "outside every executable mapping" in trace.stop_reason


def test_return_address_outside_the_stack_copy_ends_with_a_reason(binary):
    _, _, sym = binary
    trace = walk(binary, {}, {RIP: sym["callee"], RSP: STACK_TOP + 0x10000})
    assert len(trace.frames) == 1
    assert "cannot read" in trace.stop_reason


def test_frame_limit(binary):
    _, _, sym = binary
    trace = walk(binary, {STACK_TOP - 8: sym["caller"] + 5},
                 {RIP: sym["callee"], RSP: STACK_TOP - 8}, max_frames=1)
    assert len(trace.frames) == 1
    assert "frame limit" in trace.stop_reason


def test_a_frame_that_returns_into_itself_stops(binary):
    # saved rbp points at itself and the return address is callee again:
    # the next CFA equals the last one, a loop the walk must refuse
    _, _, sym = binary
    sp = STACK_TOP - 64
    words = {sp: sp, sp + 8: sym["callee"] + 10}
    trace = walk(binary, words, {RIP: sym["callee"] + 9, RSP: sp, RBP: sp})
    assert len(trace.frames) == 2
    assert "did not grow" in trace.stop_reason


ADDR = st.one_of(st.integers(0, 2**64 - 1),
                 st.integers(STACK_TOP - STACK_SIZE, STACK_TOP + 64),
                 st.sampled_from([0, 1, 2**64 - 1, 2**64 - 8, 2**63]))


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rip_offset=st.integers(0, 40), rsp=ADDR, rbp=ADDR,
       words=st.dictionaries(st.integers(0, STACK_SIZE // 8 - 1), ADDR, max_size=64))
def test_garbage_never_raises(binary, rip_offset, rsp, rbp, words):
    _, _, sym = binary
    stack = {STACK_TOP - STACK_SIZE + 8 * i: v for i, v in words.items()}
    trace = walk(binary, stack, {RIP: sym["caller"] + rip_offset, RSP: rsp, RBP: rbp})
    assert trace.stop_reason
    assert 1 <= len(trace.frames) <= 1024


@pytest.mark.parametrize("pointer", [0x10, 0])
def test_after_a_signal_frame_the_faulting_pc_may_be_anywhere(binary, pointer):
    # sigtramp's CFI (a signal frame) restores rip from [rsp] and rsp from
    # [rsp+8]: the interrupted thread had called through `pointer`
    _, _, sym = binary
    sp, interrupted = STACK_TOP - 0x800, STACK_TOP - 0x100
    words = {sp: pointer, sp + 8: interrupted, interrupted: sym["calls_leaf"] + 5}
    trace = walk(binary, words, {RIP: sym["sigtramp"], RSP: sp})
    assert [f.pc for f in trace.frames[:3]] == [sym["sigtramp"], pointer,
                                                sym["calls_leaf"] + 5], trace.stop_reason
    assert trace.frames[0].signal_frame and trace.frames[1].after_signal
    assert trace.frames[2].method == "dummy_fde" and trace.frames[2].sp == interrupted + 8
