"""The walk's fast paths give what the general ones give: a planned CFI row
steps as the rule-by-rule step does (its words sliced from memory at hand
or read one by one), Snapshot.read_u64 reads as read_u64(space, addr)
does, and a late read is counted once per read even when its page is
served from the page read before."""
from __future__ import annotations

import ctypes
import os
import random
import struct

import pytest

from collector.targets.snapshot import PAGE, Snapshot
from dict_regs import step
from unwinder import cfi
from unwinder.cfi import CfaRule, Row, Rule
from unwinder.regs import RBP, RBX, RIP, RSP, R12, R15
from unwinder.space import FakeSpace, MemoryFault, read_u64

BASE = 0x7FFF0000


def stack_space(words: int = 64) -> FakeSpace:
    data = b"".join(struct.pack("<Q", 0x1000 + 8 * i) for i in range(words))
    return FakeSpace({BASE: data})


def general(row: Row) -> Row:
    """The same row, stepped rule by rule."""
    twin = Row(row.cfa, row.rules, row.ra_reg, row.signal_frame, row.fde_start, row.fde_end,
               row.args_size)
    object.__setattr__(twin, "plan", False)
    return twin


def outcome(row, regs, space, stack=None):
    try:
        return step(row, regs, lambda a: read_u64(space, a), stack)
    except (MemoryFault, cfi.CfiError) as e:
        return type(e).__name__, str(e)


@pytest.mark.parametrize("seed", range(200))
def test_planned_step_is_the_general_step(seed):
    rnd = random.Random(seed)
    space = stack_space()
    regs = {RSP: BASE + 8 * rnd.randrange(0, 40), RIP: 0x401000}
    for reg in rnd.sample([RBX, RBP, R12, R15, 0, 1, 8], rnd.randrange(0, 5)):
        regs[reg] = rnd.randrange(1 << 64)
    saved = rnd.sample([RBX, RBP, R12, R15, RIP], rnd.randrange(0, 5))
    rules = tuple(sorted((reg, Rule(cfi.OFFSET, rnd.choice([-8, -16, -24, -32, -12, 0, 400])))
                         for reg in saved))
    cfa = CfaRule(rnd.choice([RSP, RSP, RBP, 3]), rnd.choice([8, 16, 32, 1 << 20]))
    row = Row(cfa, rules, rnd.choice([RIP, RIP, RBX]), False, 0, 0)
    expected = outcome(general(row), regs, space)
    assert outcome(row, regs, space) == expected
    data = space.blocks[BASE]
    # the saved words sliced from the stack at hand, whole or in part (read_u64 reads the rest)
    for stack in [(BASE, BASE + len(data), data), (BASE + 64, BASE + 256, data[64:256]),
                  (0, 1 << 64, b"")]:
        assert outcome(row, regs, space, stack) == expected


def test_a_row_that_needs_the_general_step_is_not_planned():
    row = Row(CfaRule(RSP, 8), ((RBX, Rule(cfi.REGISTER, RBP)), (RIP, Rule(cfi.OFFSET, -8))),
              RIP, False, 0, 0)
    space = stack_space()
    regs = {RSP: BASE, RBP: 5, RIP: 1}
    assert outcome(row, regs, space) == outcome(general(row), regs, space)
    assert row.plan is False


def snapshot(live: bool = False) -> Snapshot:
    data = bytes(range(256)) * 4
    return Snapshot(os.getpid(), [], {}, [(BASE, data), (BASE + 4096, data[:64])], live=live)


@pytest.mark.parametrize("addr", [BASE, BASE + 3, BASE + 1016, BASE + 1017, BASE + 4096,
                                  BASE + 4096 + 56, BASE + 4096 + 57, BASE - 8, -8, 1 << 64,
                                  (1 << 64) - 8])
def test_snapshot_read_u64_is_read_u64(addr):
    s = snapshot()
    try:
        want = read_u64(s, addr)
    except MemoryFault as e:
        with pytest.raises(MemoryFault) as got:
            s.read_u64(addr)
        assert (got.value.addr, got.value.size, got.value.why) == (e.addr, e.size, e.why)
    else:
        assert s.read_u64(addr) == want
        assert s.read_u64(addr) == want  # again, from the copy last read


def test_copy_at_gives_the_copy_that_holds_an_address_or_the_gap_around_it():
    s = snapshot()
    data = bytes(range(256)) * 4
    assert s.copy_at(BASE) == s.copy_at(BASE + 1023) == (BASE, BASE + 1024, data)
    assert s.copy_at(BASE + 1024) == s.copy_at(BASE + 4095) == (BASE + 1024, BASE + 4096, b"")
    assert s.copy_at(BASE + 4096 + 63) == (BASE + 4096, BASE + 4096 + 64, data[:64])
    assert s.copy_at(BASE + 4096 + 64) == (BASE + 4096 + 64, 1 << 64, b"")
    assert s.copy_at(BASE - 1) == (0, BASE, b"")


def test_a_page_read_late_serves_only_the_words_no_copy_holds():
    buf = ctypes.create_string_buffer(bytes(range(256)) * 48)  # our own memory, read "late"
    page = (ctypes.addressof(buf) + PAGE - 1) & -PAGE           # a whole page inside buf
    raw = buf.raw[page - ctypes.addressof(buf):][:PAGE]
    copied = b"\xee" * 64                       # the copy of the page's first words differs
    s = Snapshot(os.getpid(), [], {}, [(page, copied), (page + 256, copied)], live=True)
    try:
        late = [page + 64, page + 72, page + 128, page + 248]
        assert [s.read_u64(a) for a in late] == [struct.unpack_from("<Q", raw, a - page)[0]
                                                 for a in late]
        assert s.late_reads == 4
        assert s.read_u64(page + 8) == s.read_u64(page + 256) == 0xEEEEEEEEEEEEEEEE
        assert s.read_u64(page + 72) == struct.unpack_from("<Q", raw, 72)[0]
        assert s.read_u64(page + 320) == struct.unpack_from("<Q", raw, 320)[0]
        assert s.late_reads == 6
    finally:
        s.close()


def test_late_reads_of_one_page_are_each_counted():
    buf = ctypes.create_string_buffer(bytes(range(256)) * 32)   # our own memory, read "late"
    addr = ctypes.addressof(buf)
    s = Snapshot(os.getpid(), [], {}, [], live=True)
    try:
        for a in range(addr, addr + 64, 8):
            assert s.read_u64(a) == struct.unpack_from("<Q", buf.raw, a - addr)[0]
        assert s.read(addr + 5, 3) == buf.raw[5:8]
        assert s.late_reads == 9
        span = addr + (PAGE - addr % PAGE) - 4      # across a page boundary, inside buf
        assert s.read(span, 8) == buf.raw[span - addr:span - addr + 8]
        assert (s.late_reads, s.missing_reads) == (10, 0)
    finally:
        s.close()
