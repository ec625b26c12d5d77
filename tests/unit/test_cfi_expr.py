"""The DWARF expression evaluator, op by op."""
from __future__ import annotations

import struct
import time

import pytest

from dict_regs import evaluate
from unwinder.cfi import CfiError, RegisterUnknown
from unwinder.leb128 import encode_sleb as S
from unwinder.space import MemoryFault

MASK = (1 << 64) - 1
MEMORY = {0x1000: 0x1122334455667788, 0x2000: 0x1000}


def load(addr: int) -> int:
    try:
        return MEMORY[addr]
    except KeyError:
        raise MemoryFault(addr, 8) from None


def ev(expr: bytes, regs=None, stack=(), **kw) -> int:
    return evaluate(expr, regs or {}, load, stack, **kw)


def lit(n: int) -> bytes:
    return bytes([0x30 + n])


def const(n: int) -> bytes:  # DW_OP_consts
    return b"\x11" + S(n)


@pytest.mark.parametrize("expr, value", [
    (b"\x03" + struct.pack("<Q", 0xDEADBEEF), 0xDEADBEEF),  # addr
    (b"\x08\xff", 0xFF), (b"\x09\xff", MASK),                # const1u/s
    (b"\x0a\xff\xff", 0xFFFF), (b"\x0b\xfe\xff", MASK - 1),  # const2u/s
    (b"\x0c" + struct.pack("<I", 0x80000000), 0x80000000),
    (b"\x0d" + struct.pack("<i", -5), MASK - 4),
    (b"\x0e" + struct.pack("<Q", MASK), MASK), (b"\x0f" + struct.pack("<q", -1), MASK),
    (b"\x10\xe5\x8e\x26", 624485), (b"\x11\x7f", MASK),      # constu, consts
    (lit(0), 0), (lit(31), 31),
    (lit(1) + lit(2) + b"\x12\x22\x22", 5),                  # dup
    (lit(1) + lit(2) + b"\x13", 1),                          # drop
    (lit(1) + lit(2) + b"\x14", 1),                          # over
    (lit(1) + lit(2) + lit(3) + b"\x15\x02", 1),             # pick 2
    (lit(1) + lit(2) + b"\x16\x1c", 1),                      # swap; minus
    (lit(1) + lit(2) + lit(3) + b"\x17", 2),                 # rot: top=2
    (lit(1) + lit(2) + lit(3) + b"\x17\x13", 1),             # ... then 1
    (lit(1) + lit(2) + lit(3) + b"\x17\x13\x13", 3),         # ... then 3
    (const(-7) + b"\x19", 7), (lit(7) + b"\x19", 7),         # abs
    (lit(12) + lit(10) + b"\x1a", 8),                        # and
    (const(-7) + lit(2) + b"\x1b", MASK - 2),                # div truncates toward zero
    (lit(7) + const(-2) + b"\x1b", MASK - 2),
    (const(-8) + const(-2) + b"\x1b", 4),
    (lit(3) + lit(5) + b"\x1c", MASK - 1),                   # minus wraps
    (lit(17) + lit(5) + b"\x1d", 2),                         # mod
    (const(-1) + lit(2) + b"\x1e", MASK - 1),                # mul wraps
    (lit(5) + b"\x1f", MASK - 4), (lit(0) + b"\x20", MASK),  # neg, not
    (lit(12) + lit(3) + b"\x21", 15),                        # or
    (lit(30) + lit(31) + b"\x22", 61),                       # plus
    (const(-1) + b"\x23\x02", 1),                            # plus_uconst wraps
    (lit(1) + lit(4) + b"\x24", 16), (lit(1) + b"\x08\x40\x24", 0),    # shl (>= 64 -> 0)
    (const(-16) + lit(2) + b"\x25", (MASK - 15) >> 2),     # shr is logical
    (const(-16) + lit(2) + b"\x26", MASK - 3),               # shra is arithmetic
    (const(-16) + b"\x08\xc8\x26", MASK),
    (lit(12) + lit(10) + b"\x27", 6),                        # xor
    (lit(3) + lit(3) + b"\x29", 1), (lit(3) + lit(4) + b"\x29", 0),     # eq
    (const(-1) + lit(0) + b"\x2a", 0), (lit(4) + lit(4) + b"\x2a", 1),  # ge is signed
    (lit(5) + lit(4) + b"\x2b", 1), (const(-1) + lit(0) + b"\x2b", 0),  # gt
    (lit(4) + lit(4) + b"\x2c", 1), (lit(5) + lit(4) + b"\x2c", 0),     # le
    (const(-1) + lit(0) + b"\x2d", 1),                                  # lt
    (lit(3) + lit(4) + b"\x2e", 1),                                     # ne
    (lit(1) + b"\x2f\x01\x00" + lit(9) + lit(2), 2),         # skip over lit9
    (lit(1) + lit(0) + b"\x28\x01\x00" + lit(9), 9),         # bra not taken
    (lit(1) + lit(1) + b"\x28\x01\x00" + lit(9), 1),         # bra taken
    (lit(4) + b"\x96", 4),                                   # nop
    (b"\x0b\x00\x10\x06", 0x1122334455667788),               # deref
    (b"\x0b\x00\x10\x94\x02", 0x7788),                       # deref_size 2
    (b"\x0b\x00\x20\x06\x06", 0x1122334455667788),           # deref chain
])
def test_operations(expr, value):
    assert ev(expr) == value


def test_registers_and_initial_stack():
    regs = {0: 10, 7: 0x7000, 16: 0x400, 31: 5, 40: 99}
    assert ev(b"\x77\x08", regs) == 0x7008                   # breg7
    assert ev(b"\x77\x78", regs) == 0x7000 - 8
    assert ev(b"\x8f\x01", regs) == 6                        # breg31
    assert ev(b"\x92\x28\x7f", regs) == 98                   # bregx 40, -1
    assert ev(b"\x50", regs) == 10 and ev(b"\x6f", regs) == 5  # reg0, reg31 as values
    assert ev(b"\x90\x28", regs) == 99                       # regx
    assert ev(b"\x23\x10", stack=[0x100]) == 0x110           # the pushed CFA
    assert ev(b"", stack=[3, 4]) == 4
    assert ev(b"\x9c", cfa=0x5000) == 0x5000                 # call_frame_cfa


def test_plt_expression():
    expr = b"\x77\x08\x80\x00\x3f\x1a\x3b\x2a\x33\x24\x22"
    assert [ev(expr, {7: 0x100, 16: 0x1000 + i}) for i in (0, 10, 11, 15)] == [0x108, 0x108, 0x110, 0x110]


def test_missing_register():
    with pytest.raises(RegisterUnknown) as info:
        ev(b"\x76\x00", {7: 1})
    assert info.value.reg == 6 and isinstance(info.value, CfiError)


@pytest.mark.parametrize("expr, message", [
    (b"\x93\x08", "DW_OP_piece"), (b"\x9f", "DW_OP_stack_value"), (b"\x91\x00", "DW_OP_fbreg"),
    (b"\xe0", "DW_OP_GNU_push_tls_address"), (b"\xfe", "0xfe"),
    (b"", "empty"), (b"\x13", "malformed"), (b"\x22", "malformed"), (lit(1) + b"\x17", "malformed"),
    (lit(1) + lit(0) + b"\x1b", "divides"), (lit(1) + lit(0) + b"\x1d", "divides"),
    (b"\x2f\x00\x10", "outside"), (b"\x2f\xf0\xff", "outside"),
    (b"\x0c\x01", "malformed"), (b"\x10\x80", "malformed"),
    (lit(0) + b"\x15\x05", "pick"), (lit(0) + b"\x94\x09", "deref_size"),
    (b"\x9c", "call_frame_cfa"),
    (b"\x2f\xfd\xff", "too long"),                          # skip -3: an endless loop
    (lit(0) + b"\x12" * 2000, "overflow"),
])
def test_errors(expr, message):
    with pytest.raises(CfiError, match=message):
        ev(expr)


def test_memory_fault_propagates():
    with pytest.raises(MemoryFault):
        ev(lit(8) + b"\x06")


def test_loops_are_bounded_in_time():
    start = time.perf_counter()
    with pytest.raises(CfiError):
        ev(lit(1) + b"\x12\x28\xfc\xff")  # dup; bra back while nonzero: grows the stack
    with pytest.raises(CfiError):
        ev(lit(1) + b"\x2f\xfd\xff")
    assert time.perf_counter() - start < 1.0
