"""CfiTable: pc -> Row through .eh_frame_hdr (or a one-time scan), and step()."""
from __future__ import annotations

import bisect
import struct
from collections.abc import Callable

from ..regs import COUNT, NAMES, R12, R13, R14, R15, RBP, RBX, RIP
from .encoding import MASK64, PE_INDIRECT, PE_OMIT, CfiError, PointerBases, read_pointer
from .entries import Cie, Fde, is_cie, parse_cie, parse_fde, read_header
from .expr import RegisterUnknown, evaluate
from .program import (EXPRESSION, OFFSET, REGISTER, SAME_VALUE, UNDEFINED, VAL_OFFSET, CfaRule,
                      Rule, run_to)

_HDR_FAST_TABLE_ENC = 0x3B  # datarel | sdata4: the only encoding ld and lld write
_ROW_CACHE_MAX = 8192
_FDE_CACHE_MAX = 1024


class Row:
    """The rules at one pc (a plain class: dataclasses cost milliseconds to
    import). `plan` is step()'s plan for the usual row, CFA = reg + N and
    every rule "saved at CFA + N" (see _plan); False for any other; None:
    not made yet."""
    __slots__ = ("cfa", "rules", "ra_reg", "signal_frame", "fde_start", "fde_end", "args_size",
                 "plan")

    def __init__(self, cfa: CfaRule, rules: tuple[tuple[int, Rule], ...], ra_reg: int,
                 signal_frame: bool, fde_start: int, fde_end: int, args_size: int = 0):
        self.cfa = cfa
        self.rules = rules
        self.ra_reg = ra_reg
        self.signal_frame = signal_frame
        self.fde_start = fde_start
        self.fde_end = fde_end
        self.args_size = args_size
        self.plan: tuple | bool | None = None

    def _key(self) -> tuple:
        return (self.cfa, self.rules, self.ra_reg, self.signal_frame, self.fde_start,
                self.fde_end, self.args_size)

    def __eq__(self, other) -> bool:
        return self._key() == other._key() if isinstance(other, Row) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Row{self._key()!r}"


class CfiTable:
    """The CFI of one module, indexed by link-time address; FDEs are parsed on demand."""

    def __init__(self, data: bytes, is_eh: bool, bases: PointerBases,
                 index: tuple[list[int], list[int]] | None = None):
        self._data = data
        self._is_eh = is_eh
        self._bases = bases
        self._cies: dict[int, Cie] = {}
        self._fdes: dict[int, Fde] = {}
        self._rows: dict[int, Row | None] = {}
        # Sorted FDE initial locations and the matching FDE offsets in `data`.
        self._starts, self._offsets = index or self._scan()

    def __len__(self) -> int:
        return len(self._starts)

    @classmethod
    def from_eh_frame(cls, eh_frame: bytes | memoryview, eh_frame_addr: int,
                      hdr: bytes | memoryview | None = None, hdr_addr: int | None = None,
                      text_addr: int = 0, data_addr: int = 0) -> CfiTable:
        data = bytes(eh_frame)
        bases = PointerBases(eh_frame_addr, text_addr, data_addr)
        index = None
        if hdr is not None and hdr_addr is not None:
            try:
                index = _read_hdr(bytes(hdr), hdr_addr, eh_frame_addr, len(data), text_addr)
            except (CfiError, IndexError, struct.error):
                index = None  # a corrupt hdr costs a scan, not the module
        return cls(data, True, bases, index)

    @classmethod
    def from_debug_frame(cls, debug_frame: bytes | memoryview,
                         address_size: int = 8) -> CfiTable:
        return cls(bytes(debug_frame), False, PointerBases(0, 0, 0, address_size))

    def row_for(self, pc: int) -> Row | None:
        """The row covering link-time lookup address `pc`, or None if no FDE covers it."""
        try:
            return self._rows[pc]
        except KeyError:
            pass
        try:
            row = self._compute(pc)
        except (IndexError, struct.error) as e:
            raise CfiError(f"truncated CFI near pc {pc:#x}: {e}") from None
        if len(self._rows) >= _ROW_CACHE_MAX:
            self._rows.clear()
        self._rows[pc] = row
        return row

    def _compute(self, pc: int) -> Row | None:
        i = bisect.bisect_right(self._starts, pc) - 1
        if i < 0:
            return None
        fde = self._fde(self._offsets[i])
        if not fde.start <= pc < fde.end:
            return None
        state = run_to(self._data, fde, self._bases, pc)
        if state.cfa is None:
            raise CfiError(f"FDE at {fde.offset:#x} defines no CFA")
        cie = fde.cie
        return Row(state.cfa, tuple(sorted(state.rules.items())), cie.ra_reg,
                   cie.signal_frame, fde.start, fde.end, state.args_size)

    def _cie(self, off: int) -> Cie:
        cie = self._cies.get(off)
        if cie is None:
            cie = self._cies[off] = parse_cie(self._data, off, self._is_eh, self._bases)
        return cie

    def _fde(self, off: int) -> Fde:
        fde = self._fdes.get(off)
        if fde is None:
            if len(self._fdes) >= _FDE_CACHE_MAX:
                self._fdes.clear()
            fde = self._fdes[off] = parse_fde(self._data, off, self._is_eh, self._bases, self._cie)
        return fde

    def _scan(self) -> tuple[list[int], list[int]]:
        """Walk every entry once, reading FDE headers only.

        An FDE that does not parse is left out; a broken entry length ends the
        walk, as nothing after it can be found.
        """
        data, pairs, off = self._data, [], 0
        while off + 4 <= len(data):
            try:
                header = read_header(data, off)
            except (CfiError, struct.error):
                break
            if header is None:  # zero terminator (or padding): step over it
                off += 4
                continue
            _, ident, end, size = header
            if not is_cie(ident, size, self._is_eh):
                try:
                    pairs.append((parse_fde(data, off, self._is_eh, self._bases, self._cie).start, off))
                except (CfiError, IndexError, struct.error):
                    pass
            off = end
        pairs.sort()
        return [s for s, _ in pairs], [o for _, o in pairs]


def _read_hdr(hdr: bytes, hdr_addr: int, eh_frame_addr: int, eh_size: int,
              text_addr: int) -> tuple[list[int], list[int]] | None:
    """The sorted (start, FDE offset) table of .eh_frame_hdr, or None if it has none."""
    if hdr[0] != 1:
        raise CfiError(f".eh_frame_hdr version {hdr[0]}")
    ptr_enc, count_enc, table_enc = hdr[1], hdr[2], hdr[3]
    bases = PointerBases(hdr_addr, text_addr, hdr_addr)
    ptr, pos = read_pointer(hdr, 4, ptr_enc, bases)
    if ptr != eh_frame_addr:
        raise CfiError(".eh_frame_hdr points to another .eh_frame")
    if count_enc == PE_OMIT or table_enc == PE_OMIT:
        return None
    if table_enc & PE_INDIRECT:
        raise CfiError(f".eh_frame_hdr table encoding {table_enc:#x}")
    count, pos = read_pointer(hdr, pos, count_enc, bases)
    if table_enc == _HDR_FAST_TABLE_ENC:
        if pos + 8 * count > len(hdr):
            raise CfiError(".eh_frame_hdr table runs past its end")
        words = struct.unpack_from(f"<{2 * count}i", hdr, pos)
        base = hdr_addr - eh_frame_addr
        starts = [(s + hdr_addr) & MASK64 for s in words[0::2]]
        offsets = [f + base for f in words[1::2]]
    else:
        if count > len(hdr):  # each entry takes at least two bytes
            raise CfiError(".eh_frame_hdr count larger than the section")
        starts, offsets = [], []
        for _ in range(count):
            start, pos = read_pointer(hdr, pos, table_enc, bases)
            fde, pos = read_pointer(hdr, pos, table_enc, bases)
            starts.append(start)
            offsets.append(fde - eh_frame_addr)
    # min, max and sorted: in C, for libc's 3,700 entries on every cold start
    if offsets and (min(offsets) < 0 or max(offsets) >= eh_size):
        raise CfiError(".eh_frame_hdr points outside .eh_frame")
    if starts != sorted(starts):
        pairs = sorted(zip(starts, offsets))
        starts, offsets = [s for s, _ in pairs], [o for _, o in pairs]
    return starts, offsets


def step(row: Row, regs: list, read_u64: Callable[[int], int],
         stack: tuple[int, int, bytes] | None = None) -> tuple[int, list]:
    """Apply `row` to the callee's registers (unwinder.regs: a list, None
    where unknown); return (cfa, caller registers).

    A rule that needs an unknown register leaves its register unknown, except
    the CFA, whose failure is a CfiError; the callee-saved registers no rule
    names carry over, the others are unknown. MemoryFault from read_u64
    propagates. `stack`, if given, is (start, end, data), memory at hand from
    start (AddressSpace.copy_at): the saved registers are sliced from data
    where it holds them all, else read_u64 reads them.
    """
    plan = row.plan
    if plan is None:
        plan = _plan(row)
    if not plan:
        return _step_general(row, regs, read_u64)
    # the planned row: the general step's result, without its general case
    cfa_reg, cfa_offset, saved, ra_from, low, size, unpack, slots = plan
    base = regs[cfa_reg]
    if base is None:
        raise CfiError(f"cfa register {_name(cfa_reg)} unknown")
    cfa = base + cfa_offset
    if cfa >> 64:  # below 0 or past 2**64: wraps, as the general step's does
        cfa &= MASK64
    caller = _carried(regs, cfa)
    got = None
    if unpack is not None and stack is not None:
        at = cfa + low - stack[0]   # no wrap: the words at hand lie below 2**64
        data = stack[2]
        if 0 <= at <= len(data) - size:
            got = unpack(data, at)
    if got is not None:
        for reg, i in slots:
            caller[reg] = got[i]
    else:
        for reg, offset in saved:
            caller[reg] = read_u64((cfa + offset) & MASK64)
    if ra_from != RIP:  # None: no return address, the outermost frame
        caller[RIP] = None if ra_from is None else caller[ra_from]
    return cfa, caller


def _carried(regs: list, cfa: int) -> list:
    """The caller's registers before the row's rules: the callee-saved ones
    as the callee has them, rsp = CFA, the others unknown."""
    return [None, None, None, regs[RBX], None, None, regs[RBP], cfa,
            None, None, None, None, regs[R12], regs[R13], regs[R14], regs[R15], None]


def _step_general(row: Row, regs: list, read_u64: Callable[[int], int]) -> tuple[int, list]:
    cfa_rule = row.cfa
    if cfa_rule.expr is None:
        base = _get(regs, cfa_rule.reg)
        if base is None:
            raise CfiError(f"cfa register {_name(cfa_rule.reg)} unknown")
        cfa = (base + cfa_rule.offset) & MASK64
    else:
        try:
            cfa = evaluate(cfa_rule.expr, regs, read_u64)
        except RegisterUnknown as e:
            raise CfiError(f"cfa expression needs register {_name(e.reg)}, which is unknown") from None

    caller = _carried(regs, cfa)
    ra = None
    for reg, rule in row.rules:
        value = _apply(reg, rule, cfa, regs, read_u64)
        if 0 <= reg < COUNT:  # a rule for a register no frame keeps is still applied
            caller[reg] = value
        if reg == row.ra_reg:
            ra = value
    caller[RIP] = ra  # None: no return address, the outermost frame
    return cfa, caller


def _plan(row: Row) -> tuple | bool:
    """(cfa reg, N, ((reg, N), ...), the register that holds the return
    address (None: none is saved), then how to slice the saved words at once
    when they are whole words apart: lowest offset, bytes, their unpacker,
    ((reg, word), ...); None for these when they are not)."""
    plan: tuple | bool = False
    kept = range(COUNT)
    if row.cfa.expr is None and row.cfa.reg in kept and \
            all(rule.kind == OFFSET and reg in kept for reg, rule in row.rules):
        saved = tuple((reg, rule.value) for reg, rule in row.rules)
        offsets = [offset for _, offset in saved]
        low = min(offsets, default=0)
        count = (max(offsets, default=0) - low) // 8 + 1
        ra_from = row.ra_reg if any(reg == row.ra_reg for reg, _ in saved) else None
        plan = (row.cfa.reg, row.cfa.offset, saved, ra_from, None, None, None, None)
        if saved and count <= 32 and all((o - low) % 8 == 0 for o in offsets):
            plan = plan[:4] + (low, 8 * count, struct.Struct(f"<{count}Q").unpack_from,
                               tuple((reg, (offset - low) // 8) for reg, offset in saved))
    row.plan = plan
    return plan


def _get(regs: list, reg: int) -> int | None:
    return regs[reg] if 0 <= reg < COUNT else None


def _apply(reg: int, rule: Rule, cfa: int, regs: list,
           read_u64: Callable[[int], int]) -> int | None:
    kind, value = rule
    if kind == OFFSET:
        return read_u64((cfa + value) & MASK64)
    if kind == VAL_OFFSET:
        return (cfa + value) & MASK64
    if kind == UNDEFINED:
        return None
    if kind == SAME_VALUE:
        return _get(regs, reg)
    if kind == REGISTER:
        return _get(regs, value)
    try:  # EXPRESSION or VAL_EXPRESSION
        result = evaluate(value, regs, read_u64, (cfa,))
    except RegisterUnknown:
        return None
    return read_u64(result) if kind == EXPRESSION else result


def _name(reg: int) -> str:
    return NAMES[reg] if 0 <= reg < len(NAMES) else f"r{reg}"
