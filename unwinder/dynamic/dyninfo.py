"""libunwind's `_U_dyn_info_list` (see libunwind-dynamic(3)): procedures
in the proc-info format (regions of unw_dyn_op_t directives, turned into CFI
rows here; their frames are tagged `jit`) or the table-info formats (an
.eh_frame_hdr-style search table and FDEs in memory, tagged `cfi`).

x86-64 reading of the proc-info format, which libunwind itself implements only
for IA-64: an instruction index is a byte offset from the region's start; at
procedure entry CFA = rsp+8 with the return address at CFA-8; a directive
takes effect once the pc is past its `when`; ADD to rsp moves the CFA offset;
SAVE_REG rsp -> rbp makes rbp the CFA register; POP_FRAMES n (the point
where the stack pointer is restored) undoes the n+1 innermost regions that
changed the state, as an IA-64 epilogue pops prologue regions.
"""
from __future__ import annotations

import struct

from ..cfi import EXPRESSION, OFFSET, REGISTER, CfaRule, CfiError, CfiTable, Row, Rule
from ..cfi.encoding import PointerBases
from ..elf import STB_GLOBAL
from ..leb128 import encode_sleb
from ..modules import MAX_IN_MEMORY_IMAGE, Module
from ..regs import RBP, RIP, RSP
from ..space import AddressSpace, MemoryFault, read_u64
from ..symbols.symtab import SymbolTable
from .common import MAX_ENTRIES, RuntimeImage, linked

SYMBOLS = ("_U_dyn_info_list", "_U_dyn_info_list_addr")
MAX_REGIONS = 256
MAX_OPS = 1024              # per region
MAX_ALIAS_DEPTH = 4
MAX_TABLE = 1 << 20         # bytes of an in-memory FDE table
MAX_NAME = 256
_OP = struct.Struct("<bbhiQ")
(DYN_STOP, DYN_SAVE_REG, DYN_SPILL_FP_REL, DYN_SPILL_SP_REL, DYN_ADD, DYN_POP_FRAMES,
 DYN_LABEL_STATE, DYN_COPY_STATE, DYN_ALIAS) = range(9)
FORMAT_DYNAMIC, FORMAT_TABLE, FORMAT_REMOTE_TABLE, FORMAT_IP_OFFSET = 0, 1, 2, 4
_CHANGES = (DYN_SAVE_REG, DYN_SPILL_FP_REL, DYN_SPILL_SP_REL, DYN_ADD)


def from_symbols(space: AddressSpace, found: dict[str, int], cache,
                 errors: list[str]) -> list[Module]:
    head = found.get("_U_dyn_info_list") or _list_from_addr_function(
        space, found.get("_U_dyn_info_list_addr"))
    return libunwind(space, head, errors) if head else []


def _list_from_addr_function(space: AddressSpace, fn: int | None) -> int | None:
    """libunwind.so hides _U_dyn_info_list; _U_dyn_info_list_addr() is
    `lea list(%rip), %rax; ret`: decode it."""
    if not fn:
        return None
    code = space.read(fn, 8)
    if code[:3] != b"\x48\x8d\x05" or code[7] != 0xC3:
        return None
    return fn + 7 + struct.unpack_from("<i", code, 3)[0]


def libunwind(space: AddressSpace, head: int, errors: list[str]) -> list[Module]:
    """unw_dyn_info_list_t { u32 version, generation; unw_dyn_info_t *first; }"""
    out = []
    resolver = _Procs()
    for addr in linked(space, read_u64(space, head + 8)):
        info = space.read(addr, 88)
        _, _, start, end, _, fmt, _, _, name_ptr, a, b, c = struct.unpack("<5QiiQ4Q", info)
        name = _cstr(space, name_ptr) or f"{start:#x}"
        try:
            if not start < end or end - start > MAX_IN_MEMORY_IMAGE:
                raise CfiError(f"range {start:#x}-{end:#x}")
            if fmt == FORMAT_DYNAMIC:
                image = ProcInfo(name, start, end, _regions(space, c), resolver)
                resolver.add(image)
            elif fmt in (FORMAT_TABLE, FORMAT_REMOTE_TABLE, FORMAT_IP_OFFSET):
                base = start if fmt == FORMAT_IP_OFFSET else a
                image = TableInfo(name, start, end, _fde_table(space, base, a, b, c))
            else:
                raise CfiError(f"unknown format {fmt}")
            out.append(Module(f"[libunwind {name}]", start, end, image=image, bias=0))
        except (CfiError, MemoryFault, struct.error) as e:
            errors.append(f"libunwind dynamic info {name}: {e}")
    return out


class Region:
    """Plain classes, not dataclasses: those cost milliseconds to import."""
    __slots__ = ("insn_count", "ops")

    def __init__(self, insn_count: int, ops: list[tuple[int, int, int, int]]):
        self.insn_count = insn_count
        self.ops = ops  # (when, tag, reg, val), sorted by when


def _regions(space: AddressSpace, addr: int) -> list[Region]:
    out = []
    while addr and len(out) < MAX_REGIONS:
        nxt, insn_count, op_count = struct.unpack("<QiI", space.read(addr, 16))
        count = min(op_count, MAX_OPS)
        raw = space.read(addr + 16, 16 * count) if count else b""
        ops = []
        for tag, _, reg, when, val in _OP.iter_unpack(raw):
            if tag == DYN_STOP:
                break
            ops.append((when, tag, reg, val))
        out.append(Region(insn_count, sorted(ops, key=lambda op: op[0])))
        addr = nxt
    return out


class _State:
    __slots__ = ("cfa_reg", "cfa_off", "rules")

    def __init__(self, cfa_reg: int = RSP, cfa_off: int = 8, rules: dict[int, Rule] | None = None):
        self.cfa_reg = cfa_reg
        self.cfa_off = cfa_off
        self.rules = {RIP: Rule(OFFSET, -8)} if rules is None else rules

    def copy(self) -> _State:
        return _State(self.cfa_reg, self.cfa_off, dict(self.rules))


def _one_symbol(name: str, start: int, end: int) -> SymbolTable:
    return SymbolTable([(start, 0, end - start, STB_GLOBAL, 0, 0)], name.encode() + b"\0")


class ProcInfo(RuntimeImage):
    """A procedure described in libunwind's proc-info format."""
    method = "jit"

    def __init__(self, name, start, end, regions: list[Region], resolver):
        super().__init__(name, _one_symbol(name, start, end))
        self.start, self.end, self.regions = start, end, regions
        self._resolver = resolver

    def _row(self, pc: int, depth: int = 0) -> Row | None:
        if not self.start <= pc < self.end:
            return None
        state, offset, at, size = _State(), pc - self.start, 0, self.end - self.start
        labels: dict[int, _State] = {}
        prologues: list[_State] = []     # entry states of the regions that changed it
        for region in self.regions:
            if region.insn_count < 0:    # the last -insn_count bytes of the procedure
                at = max(at, size + region.insn_count)
                length = size - at
            else:
                length = region.insn_count
            entry, changed = state.copy(), False
            for when, tag, reg, val in region.ops:
                if at + when >= offset:
                    break
                if tag == DYN_ALIAS:
                    if depth >= MAX_ALIAS_DEPTH:
                        raise CfiError("libunwind alias chain too long")
                    return self._resolver.row_for(val + (pc - self.start), depth + 1)
                if tag in _CHANGES and not changed:
                    prologues.append(entry)
                    changed = True
                state = _apply(state, tag, reg, val, labels, prologues)
            if offset < at + length:
                break
            at += length
        rules = tuple(sorted(state.rules.items()))
        return Row(CfaRule(state.cfa_reg, state.cfa_off), rules, RIP, False, self.start, self.end)


def _apply(state: _State, tag: int, reg: int, val: int, labels, prologues) -> _State:
    sval = val - (1 << 64) if val >= 1 << 63 else val
    if tag == DYN_SAVE_REG:
        if reg == RSP and val == RBP:
            state.cfa_reg = RBP          # mov %rsp, %rbp: rbp now locates the CFA
        else:
            state.rules[reg] = Rule(REGISTER, val)
    elif tag in (DYN_SPILL_SP_REL, DYN_SPILL_FP_REL):
        base = RSP if tag == DYN_SPILL_SP_REL else RBP
        if state.cfa_reg == base:
            state.rules[reg] = Rule(OFFSET, sval - state.cfa_off)
        else:                            # DW_OP_breg<base> sval
            state.rules[reg] = Rule(EXPRESSION, bytes([0x70 + base]) + encode_sleb(sval))
    elif tag == DYN_ADD:
        if reg == RSP and state.cfa_reg == RSP:
            state.cfa_off -= sval
    elif tag == DYN_POP_FRAMES and prologues:
        keep = max(0, len(prologues) - 1 - val)
        state = prologues[keep].copy()
        del prologues[keep:]
    elif tag == DYN_LABEL_STATE:
        labels[val] = state.copy()
    elif tag == DYN_COPY_STATE and val in labels:
        state = labels[val].copy()
    return state


class _Procs:
    """Proc-info procedures by address, for UNW_DYN_ALIAS."""

    def __init__(self):
        self.procs: list[ProcInfo] = []

    def add(self, proc: ProcInfo) -> None:
        self.procs.append(proc)

    def row_for(self, pc: int, depth: int) -> Row | None:
        proc = next((p for p in self.procs if p.start <= pc < p.end), None)
        return proc._row(pc, depth) if proc else None


class TableInfo(RuntimeImage):
    """Procedures described by an in-memory FDE search table."""

    def __init__(self, name, start, end, table: CfiTable):
        super().__init__(name, _one_symbol(name, start, end))
        self._table = table

    def _row(self, pc: int, depth: int = 0) -> Row | None:
        return self._table.row_for(pc)


def _fde_table(space: AddressSpace, ip_base: int, segbase: int, words: int,
               table: int) -> CfiTable:
    """Sorted (int32 start - ip_base, int32 FDE - segbase) pairs; the FDEs and
    their CIEs are copied as one span of memory."""
    count = min(words, MAX_ENTRIES)
    pairs = list(struct.iter_unpack("<ii", space.read(table, 8 * count))) if count else []
    fdes = [segbase + f for _, f in pairs]
    lo, hi = [], []
    for fde in fdes:
        length = struct.unpack("<I", space.read(fde, 4))[0]
        cie = fde + 4 - struct.unpack("<I", space.read(fde + 4, 4))[0]
        lo += [fde, cie]
        hi += [fde + 4 + length, cie + 4 + struct.unpack("<I", space.read(cie, 4))[0]]
    if not fdes:
        raise CfiError("empty table")
    low, high = min(lo), max(hi)
    if high - low > MAX_TABLE:
        raise CfiError(f"FDEs spread over {high - low} bytes")
    data = space.read(low, high - low)
    starts = [ip_base + s for s, _ in pairs]
    order = sorted(range(len(pairs)), key=lambda i: starts[i])
    return CfiTable(data, True, PointerBases(low, 0, segbase),
                    ([starts[i] for i in order], [fdes[i] - low for i in order]))


def _cstr(space: AddressSpace, addr: int) -> str | None:
    if not addr:
        return None
    try:
        data = space.read(addr, MAX_NAME)
    except MemoryFault:
        try:
            data = space.read(addr, 32)
        except MemoryFault:
            return None
    return data.split(b"\0", 1)[0].decode("utf-8", "replace") or None
