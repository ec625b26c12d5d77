"""A bounded DWARF expression evaluator (the subset CFI and simple locations use)."""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from .encoding import MASK64, CfiError, sleb, uleb

MAX_OPS = 10_000
MAX_STACK = 1024

_SIGN = 1 << 63
_CONSTS = {  # DW_OP_const1u .. const8s
    0x08: struct.Struct("<B"), 0x09: struct.Struct("<b"), 0x0A: struct.Struct("<H"),
    0x0B: struct.Struct("<h"), 0x0C: struct.Struct("<I"), 0x0D: struct.Struct("<i"),
    0x0E: struct.Struct("<Q"), 0x0F: struct.Struct("<q"), 0x03: struct.Struct("<Q"),  # addr
}
_S16 = struct.Struct("<h")
_UNSUPPORTED = {
    0x18: "xderef", 0x91: "fbreg", 0x93: "piece", 0x95: "xderef_size",
    0x97: "push_object_address", 0x98: "call2", 0x99: "call4", 0x9A: "call_ref",
    0x9B: "form_tls_address", 0x9D: "bit_piece", 0x9E: "implicit_value",
    0x9F: "stack_value", 0xA3: "entry_value", 0xE0: "GNU_push_tls_address",
    0xF3: "GNU_entry_value",
}


class RegisterUnknown(CfiError):
    """The expression needs a register whose value is not known."""

    def __init__(self, reg: int):
        super().__init__(f"register {reg} unknown")
        self.reg = reg


def _signed(v: int) -> int:
    return v - (1 << 64) if v & _SIGN else v


def _reg(regs: list, reg: int) -> int:
    value = regs[reg] if 0 <= reg < len(regs) else None
    if value is None:
        raise RegisterUnknown(reg)
    return value


def evaluate(expr: bytes, regs: list, read_u64: Callable[[int], int],
             initial_stack: Iterable[int] = (), *, cfa: int | None = None) -> int:
    """Run `expr` and return the top of the stack (an unsigned 64-bit value).

    DW_OP_reg*/regx push the register's value (`regs`: values by DWARF number,
    None where unknown, as unwinder.regs keeps a frame's; a number past its end
    is unknown).
    DW_OP_call_frame_cfa needs `cfa`.
    MemoryFault from read_u64 propagates; everything else wrong is a CfiError.
    """
    try:
        return _run(bytes(expr), regs, read_u64, [v & MASK64 for v in initial_stack], cfa)
    except (IndexError, struct.error) as e:
        raise CfiError(f"malformed DWARF expression: {e}") from None


def _run(expr: bytes, regs: list, read_u64: Callable[[int], int],
         stack: list[int], cfa: int | None) -> int:
    pos, end, ops = 0, len(expr), 0
    push, pop = stack.append, stack.pop
    while pos < end:
        ops += 1
        if ops > MAX_OPS:
            raise CfiError("DWARF expression runs too long (a loop?)")
        if len(stack) > MAX_STACK:
            raise CfiError("DWARF expression stack overflow")
        op = expr[pos]
        pos += 1
        if 0x70 <= op <= 0x8F:    # breg0..31
            off, pos = sleb(expr, pos)
            push((_reg(regs, op - 0x70) + off) & MASK64)
        elif 0x30 <= op <= 0x4F:  # lit0..31
            push(op - 0x30)
        elif 0x50 <= op <= 0x6F:  # reg0..31, as a value
            push(_reg(regs, op - 0x50) & MASK64)
        elif op in _CONSTS:
            st = _CONSTS[op]
            push(st.unpack_from(expr, pos)[0] & MASK64)
            pos += st.size
        elif op == 0x10:  # constu
            v, pos = uleb(expr, pos)
            push(v & MASK64)
        elif op == 0x11:  # consts
            v, pos = sleb(expr, pos)
            push(v & MASK64)
        elif op == 0x06:  # deref
            push(read_u64(pop()))
        elif op == 0x94:  # deref_size
            size = expr[pos]
            pos += 1
            if not 1 <= size <= 8:
                raise CfiError(f"DW_OP_deref_size {size}")
            push(read_u64(pop()) & ((1 << (8 * size)) - 1))
        elif op == 0x92:  # bregx
            reg, pos = uleb(expr, pos)
            off, pos = sleb(expr, pos)
            push((_reg(regs, reg) + off) & MASK64)
        elif op == 0x90:  # regx
            reg, pos = uleb(expr, pos)
            push(_reg(regs, reg) & MASK64)
        elif op == 0x23:  # plus_uconst
            v, pos = uleb(expr, pos)
            push((pop() + v) & MASK64)
        elif op == 0x12:  # dup
            push(stack[-1])
        elif op == 0x13:  # drop
            pop()
        elif op == 0x14:  # over
            push(stack[-2])
        elif op == 0x15:  # pick
            index = expr[pos]
            pos += 1
            if index >= len(stack):
                raise CfiError(f"DW_OP_pick {index} beyond the stack")
            push(stack[-1 - index])
        elif op == 0x16:  # swap
            stack[-1], stack[-2] = stack[-2], stack[-1]
        elif op == 0x17:  # rot: top -> third, second -> top, third -> second
            stack[-3], stack[-2], stack[-1] = stack[-1], stack[-3], stack[-2]
        elif op == 0x19:  # abs
            push(abs(_signed(pop())) & MASK64)
        elif op == 0x1F:  # neg
            push(-pop() & MASK64)
        elif op == 0x20:  # not
            push(~pop() & MASK64)
        elif 0x1A <= op <= 0x2E and op not in (0x23, 0x28):  # binary operators
            b = pop()
            a = pop()
            push(_binary(op, a, b))
        elif op == 0x2F or op == 0x28:  # skip, bra
            off = _S16.unpack_from(expr, pos)[0]
            pos += 2
            if op == 0x2F or pop() != 0:
                pos += off
                if not 0 <= pos <= end:
                    raise CfiError("DWARF expression branches outside itself")
        elif op == 0x96:  # nop
            pass
        elif op == 0x9C:  # call_frame_cfa
            if cfa is None:
                raise CfiError("DW_OP_call_frame_cfa without a CFA")
            push(cfa & MASK64)
        else:
            name = _UNSUPPORTED.get(op)
            raise CfiError(f"unsupported DWARF operation {'DW_OP_' + name if name else hex(op)}")
    if not stack:
        raise CfiError("DWARF expression left an empty stack")
    return stack[-1]


def _binary(op: int, a: int, b: int) -> int:
    """`a` is the second entry, `b` the top; results are modulo 2**64."""
    if op == 0x22:  # plus
        return (a + b) & MASK64
    if op == 0x1C:  # minus
        return (a - b) & MASK64
    if op == 0x1A:  # and
        return a & b
    if op == 0x21:  # or
        return a | b
    if op == 0x27:  # xor
        return a ^ b
    if op == 0x1E:  # mul
        return (a * b) & MASK64
    if op == 0x24:  # shl
        return (a << b) & MASK64 if b < 64 else 0
    if op == 0x25:  # shr
        return a >> b if b < 64 else 0
    if op == 0x26:  # shra
        return (_signed(a) >> min(b, 63)) & MASK64
    if op == 0x1B or op == 0x1D:  # div (signed, truncating), mod (unsigned)
        if b == 0:
            raise CfiError("DWARF expression divides by zero")
        if op == 0x1D:
            return a % b
        sa, sb = _signed(a), _signed(b)
        q = abs(sa) // abs(sb)
        return (q if (sa < 0) == (sb < 0) else -q) & MASK64
    sa, sb = _signed(a), _signed(b)  # comparisons are signed
    if op == 0x29:
        return int(sa == sb)
    if op == 0x2A:
        return int(sa >= sb)
    if op == 0x2B:
        return int(sa > sb)
    if op == 0x2C:
        return int(sa <= sb)
    if op == 0x2D:
        return int(sa < sb)
    return int(sa != sb)  # 0x2E ne
