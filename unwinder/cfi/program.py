"""The DW_CFA interpreter: CIE initial instructions + FDE instructions -> rules at a pc."""
from __future__ import annotations

import struct
from collections import namedtuple

from .encoding import CfiError, PointerBases, read_pointer, sleb, uleb
from .entries import Cie, Fde

UNDEFINED = "undefined"
SAME_VALUE = "same_value"
OFFSET = "offset"                  # saved at cfa+N
VAL_OFFSET = "val_offset"          # value is cfa+N
REGISTER = "register"              # value is in register N
EXPRESSION = "expression"          # saved at eval(E, [cfa])
VAL_EXPRESSION = "val_expression"  # value is eval(E, [cfa])


# collections' named tuples, not typing's: typing costs milliseconds to import
Rule = namedtuple("Rule", "kind value", defaults=(None,))   # value: int, bytes or None
# reg+offset, or a DWARF expression when `expr` is set (then reg is -1)
CfaRule = namedtuple("CfaRule", "reg offset expr", defaults=(None,))


# One remember_state per byte of data could otherwise copy the rule set a million times.
MAX_STATE_STACK = 64

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# Ops that give a register a factored offset: (rule kind, offset reader, sign).
_FACTORED = {0x05: (OFFSET, uleb, 1), 0x11: (OFFSET, sleb, 1), 0x2F: (OFFSET, uleb, -1),
             0x14: (VAL_OFFSET, uleb, 1), 0x15: (VAL_OFFSET, sleb, 1)}


State = namedtuple("State", "cfa rules args_size")  # CfaRule | None, {reg: Rule}, int


def initial_state(buf: bytes, cie: Cie, bases: PointerBases) -> State:
    """The CIE's initial instructions, run once per CIE and kept on it."""
    if cie.initial is None:
        cie.initial = execute(buf, cie.insn_start, cie.insn_end, cie, bases,
                              0, None, None, {}, {})
    return cie.initial


def run_to(buf: bytes, fde: Fde, bases: PointerBases, pc: int) -> State:
    """Rules in effect at `pc` (stop as soon as the location passes it)."""
    cie = fde.cie
    cfa, rules, _ = initial_state(buf, cie, bases)
    return execute(buf, fde.insn_start, fde.insn_end, cie, bases,
                   fde.start, pc, cfa, dict(rules), rules)


def _block(buf: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = uleb(buf, pos)
    if pos + length > len(buf):
        raise CfiError("expression block runs past the section end")
    return buf[pos:pos + length], pos + length


def execute(buf: bytes, pos: int, end: int, cie: Cie, bases: PointerBases, loc: int,
            pc: int | None, cfa: CfaRule | None, rules: dict[int, Rule],
            initial: dict[int, Rule]) -> State:
    """Run instructions in buf[pos:end]; `pc` None runs them all (a CIE)."""
    caf, daf = cie.code_align, cie.data_align
    stack: list[tuple[CfaRule | None, dict[int, Rule]]] = []
    args_size = 0
    while pos < end:
        op = buf[pos]
        pos += 1
        high = op & 0xC0
        if high:
            low = op & 0x3F
            if high == 0x40:    # advance_loc
                loc += low * caf
                if pc is not None and loc > pc:
                    break
            elif high == 0x80:  # offset
                n, pos = uleb(buf, pos)
                rules[low] = Rule(OFFSET, n * daf)
            else:               # restore
                _restore(rules, initial, low)
            continue
        if op == 0x0E:    # def_cfa_offset
            n, pos = uleb(buf, pos)
            cfa = _with_offset(cfa, n)
        elif op == 0x00:  # nop
            pass
        elif op in (0x02, 0x03, 0x04, 0x1D):  # advance_loc1/2/4, MIPS_advance_loc8
            if op == 0x02:
                delta = buf[pos]
                pos += 1
            elif op == 0x03:
                delta = _U16.unpack_from(buf, pos)[0]
                pos += 2
            elif op == 0x04:
                delta = _U32.unpack_from(buf, pos)[0]
                pos += 4
            else:
                delta = _U64.unpack_from(buf, pos)[0]
                pos += 8
            loc += delta * caf
            if pc is not None and loc > pc:
                break
        elif op == 0x01:  # set_loc
            loc, pos = read_pointer(buf, pos, cie.fde_enc & 0x7F, bases)
            if pc is not None and loc > pc:
                break
        elif op == 0x0A:  # remember_state (the CFA too, as gcc's unwinder and readelf do)
            if len(stack) >= MAX_STATE_STACK:
                raise CfiError("DW_CFA_remember_state nested too deeply")
            stack.append((cfa, dict(rules)))
        elif op == 0x0B:  # restore_state
            if not stack:
                raise CfiError("DW_CFA_restore_state with nothing remembered")
            cfa, rules = stack.pop()
        elif op == 0x0C:  # def_cfa
            reg, pos = uleb(buf, pos)
            n, pos = uleb(buf, pos)
            cfa = CfaRule(reg, n)
        elif op == 0x0D:  # def_cfa_register
            reg, pos = uleb(buf, pos)
            cfa = CfaRule(reg, 0 if cfa is None or cfa.expr is not None else cfa.offset)
        elif op == 0x12:  # def_cfa_sf: factored by the DATA alignment factor
            reg, pos = uleb(buf, pos)
            n, pos = sleb(buf, pos)
            cfa = CfaRule(reg, n * daf)
        elif op == 0x13:  # def_cfa_offset_sf
            n, pos = sleb(buf, pos)
            cfa = _with_offset(cfa, n * daf)
        elif op == 0x0F:  # def_cfa_expression
            expr, pos = _block(buf, pos)
            cfa = CfaRule(-1, 0, expr)
        elif op in _FACTORED:  # offset_extended(_sf), GNU_negative_offset_extended, val_offset(_sf)
            kind, read, sign = _FACTORED[op]
            reg, pos = uleb(buf, pos)
            n, pos = read(buf, pos)
            rules[reg] = Rule(kind, sign * n * daf)
        elif op == 0x06:  # restore_extended
            reg, pos = uleb(buf, pos)
            _restore(rules, initial, reg)
        elif op == 0x07:  # undefined
            reg, pos = uleb(buf, pos)
            rules[reg] = Rule(UNDEFINED)
        elif op == 0x08:  # same_value
            reg, pos = uleb(buf, pos)
            rules[reg] = Rule(SAME_VALUE)
        elif op == 0x09:  # register
            reg, pos = uleb(buf, pos)
            other, pos = uleb(buf, pos)
            rules[reg] = Rule(REGISTER, other)
        elif op == 0x10 or op == 0x16:  # expression, val_expression
            reg, pos = uleb(buf, pos)
            expr, pos = _block(buf, pos)
            rules[reg] = Rule(EXPRESSION if op == 0x10 else VAL_EXPRESSION, expr)
        elif op == 0x2E:  # GNU_args_size
            args_size, pos = uleb(buf, pos)
        elif op == 0x2D:  # GNU_window_save: SPARC/AArch64 only, nothing to do on x86-64
            pass
        else:
            raise CfiError(f"unknown DW_CFA opcode {op:#x}")
    if pos > end:
        raise CfiError("CFA instruction runs past the entry end")
    return State(cfa, rules, args_size)


def _with_offset(cfa: CfaRule | None, offset: int) -> CfaRule:
    if cfa is None or cfa.expr is not None:
        raise CfiError("DW_CFA_def_cfa_offset without a register CFA rule")
    return CfaRule(cfa.reg, offset)


def _restore(rules: dict[int, Rule], initial: dict[int, Rule], reg: int) -> None:
    rule = initial.get(reg)
    if rule is None:
        rules.pop(reg, None)
    else:
        rules[reg] = rule
