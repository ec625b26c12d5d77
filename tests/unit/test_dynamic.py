"""Run-time unwind info read through a fake address space: libunwind's
proc-info directives (one test per instruction boundary of the JIT fixture's
code, and per directive kind), its table-info format, GDB JIT descriptors
and perf maps; garbage lists must end with an error, never hang."""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from unwinder import dynamic
from unwinder.cfi import EXPRESSION, OFFSET, REGISTER
from unwinder.cfi import CfiError
from unwinder.elf import ElfError
from unwinder.modules import ImageCache, ModuleMap
from unwinder.regs import RBP, RBX, RIP, RSP
from unwinder.space import FakeSpace, Mapping, MemoryFault
from unwinder.walk import unwind

CODE = 0x10_0000            # the "JIT" page
DATA = 0x20_0000            # where the registration structures live
STACK_TOP = 0x7FFF_0000_0000
SIZE = 28                   # the fixture's function: see tests/fixtures/jit.c
(STOP, SAVE_REG, SPILL_FP, SPILL_SP, ADD, POP, LABEL, COPY, ALIAS) = range(9)
FIXTURE_OPS = [(ADD, 0, RSP, -8), (SPILL_SP, 0, RBP, 0), (SAVE_REG, 1, RSP, RBP),
               (ADD, 4, RSP, -8), (SPILL_FP, 4, RBX, -8), (POP, 26, 0, 0)]


class Memory:
    """Little-endian structures laid out from DATA, by address."""

    def __init__(self):
        self.data = bytearray(0x4000)
        self.top = 0x100

    def put(self, raw: bytes, align: int = 8) -> int:
        self.top = (self.top + align - 1) & ~(align - 1)
        addr = DATA + self.top
        self.data[self.top:self.top + len(raw)] = raw
        self.top += len(raw)
        return addr

    def patch(self, addr: int, raw: bytes):
        self.data[addr - DATA:addr - DATA + len(raw)] = raw


def region(ops, insn_count=SIZE, nxt=0) -> bytes:
    raw = struct.pack("<QiI", nxt, insn_count, len(ops) + 1)
    for tag, when, reg, val in ops:
        raw += struct.pack("<bbhiQ", tag, 0, reg, when, val & (2**64 - 1))
    return raw + struct.pack("<bbhiQ", STOP, 0, 0, -1, 0)


def dyn_info(start, end, fmt, a=0, b=0, c=0, name=0, nxt=0) -> bytes:
    return struct.pack("<5QiiQ4Q", nxt, 0, start, end, 0, fmt, 0, 0, name, a, b, c)


def proc_info_list(mem: Memory, regions_raw: list[bytes] | None = None, name=b"jit_function"):
    """A list head with one proc-info procedure; returns (head, info address)."""
    regions_raw = regions_raw or [region(FIXTURE_OPS)]
    addr = 0
    for raw in reversed(regions_raw):      # link them: each region's next is the previous one
        if addr:
            raw = struct.pack("<Q", addr) + raw[8:]
        addr = mem.put(raw)
    name_at = mem.put(name + b"\0")
    info = mem.put(dyn_info(CODE, CODE + SIZE, dynamic.FORMAT_DYNAMIC, c=addr, name=name_at))
    head = mem.put(struct.pack("<IIQ", 1, 1, info))
    return head, info


def space(mem: Memory, stack: dict[int, int] | None = None) -> FakeSpace:
    st_ = bytearray(0x1000)
    for addr, value in (stack or {}).items():
        off = addr - (STACK_TOP - 0x1000)
        st_[off:off + 8] = struct.pack("<Q", value)
    return FakeSpace({DATA: bytes(mem.data), STACK_TOP - 0x1000: bytes(st_),
                      CODE: b"\x90" * 0x1000},
                     [Mapping(CODE, CODE + 0x1000, "rwxp"), Mapping(DATA, DATA + 0x4000, "rw-p"),
                      Mapping(STACK_TOP - 0x1000, STACK_TOP, "rw-p", path="[stack]")])


def procedure(mem=None, **kw):
    mem = mem or Memory()
    head, _ = proc_info_list(mem, **kw)
    errors = []
    modules = dynamic.libunwind(space(mem), head, errors)
    assert not errors
    return modules[0]


# (offset, CFA register and offset, rbp rule, rbx rule): the fixture's code
ROWS = {
    0: (RSP, 8, None, None),
    1: (RSP, 16, -16, None),
    4: (RBP, 16, -16, None),
    5: (RBP, 16, -16, -24),
    20: (RBP, 16, -16, -24),
    26: (RBP, 16, -16, -24),
    27: (RSP, 8, None, None),
}


@pytest.mark.parametrize("offset", sorted(ROWS))
def test_proc_info_row_at_each_instruction_boundary(offset):
    module = procedure()
    assert module.path == "[libunwind jit_function]"
    row = module.image.row_for(CODE + offset)
    cfa_reg, cfa_off, rbp, rbx = ROWS[offset]
    rules = dict(row.rules)
    assert (row.cfa.reg, row.cfa.offset) == (cfa_reg, cfa_off)
    assert rules[RIP] == (OFFSET, -8)
    assert rules.get(RBP) == (None if rbp is None else (OFFSET, rbp))
    assert rules.get(RBX) == (None if rbx is None else (OFFSET, rbx))


def test_walk_through_a_proc_info_procedure_is_tagged_jit():
    mem = Memory()
    head, _ = proc_info_list(mem)
    cfa = STACK_TOP - 0x100
    ra = CODE + 0x800
    stack = {cfa - 8: ra, cfa - 16: 0xAAAA, cfa - 24: 0xBBBB}
    s = space(mem, stack)
    registered = dynamic.Registered(dynamic.libunwind(s, head, []), [], [])
    regs = {RIP: CODE + 21, RSP: cfa - 32, RBP: cfa - 16, RBX: 1}
    trace = unwind(s, ModuleMap(s), regs, dynamic=registered)
    caller = trace.frames[1]
    assert (caller.method, caller.pc, caller.sp) == ("jit", ra, cfa)
    assert (caller.regs[RBP], caller.regs[RBX]) == (0xAAAA, 0xBBBB)
    assert trace.frames[0].module.image.symbols.lookup(CODE + 21) == ("jit_function", 21)


def test_save_reg_to_another_register():
    row = procedure(regions_raw=[region([(SAVE_REG, 0, RBX, 12)])]).image.row_for(CODE + 5)
    assert dict(row.rules)[RBX] == (REGISTER, 12)


def test_spill_fp_rel_before_rbp_locates_the_cfa_is_an_expression():
    row = procedure(regions_raw=[region([(SPILL_FP, 0, RBX, -8)])]).image.row_for(CODE + 5)
    kind, expr = dict(row.rules)[RBX]
    assert kind == EXPRESSION and expr == bytes([0x76, 0x78])    # DW_OP_breg6 -8


def test_label_and_copy_state():
    ops = [(ADD, 0, RSP, -8), (LABEL, 1, 0, 7), (ADD, 2, RSP, -32), (COPY, 3, 0, 7)]
    module = procedure(regions_raw=[region(ops)])
    assert module.image.row_for(CODE + 3).cfa.offset == 48
    assert module.image.row_for(CODE + 4).cfa.offset == 16


def test_regions_in_sequence_and_a_negative_count_for_the_end():
    first = region([(ADD, 0, RSP, -8)], insn_count=4)
    last = region([(POP, 0, 0, 0)], insn_count=-2)      # the last 2 bytes: after the pop
    module = procedure(regions_raw=[first, last])
    assert module.image.row_for(CODE + 10).cfa.offset == 16   # the body: state carried over
    assert module.image.row_for(CODE + 27).cfa.offset == 8    # after the epilogue's pop


def test_alias_takes_the_row_of_another_procedure():
    mem = Memory()
    real_regions = mem.put(region([(ADD, 0, RSP, -24)]))
    real = mem.put(dyn_info(CODE + 0x100, CODE + 0x100 + SIZE, 0, c=real_regions))
    alias_regions = mem.put(region([(ALIAS, -1, 0, CODE + 0x100)]))
    alias = mem.put(dyn_info(CODE, CODE + SIZE, 0, c=alias_regions, nxt=real))
    head = mem.put(struct.pack("<IIQ", 1, 1, alias))
    modules = dynamic.libunwind(space(mem), head, [])
    assert modules[0].image.row_for(CODE + 5).cfa.offset == 32


def test_alias_loops_end_with_an_error():
    mem = Memory()
    regions_at = mem.put(region([(ALIAS, -1, 0, CODE)]))
    info = mem.put(dyn_info(CODE, CODE + SIZE, 0, c=regions_at))
    head = mem.put(struct.pack("<IIQ", 1, 1, info))
    module = dynamic.libunwind(space(mem), head, [])[0]
    assert module.image.row_for(CODE + 5) is None
    assert "alias chain too long" in module.image.errors[0]


def test_table_info_format_reads_fdes_from_memory():
    mem = Memory()
    cie = bytes([0x14, 0, 0, 0, 0, 0, 0, 0, 1, ord("z"), ord("R"), 0, 1, 0x78, 16, 1, 0x00,
                 0x0C, 7, 8, 0x90, 1, 0, 0])
    cie_at = mem.put(cie)
    fde_at = cie_at + len(cie)
    body = struct.pack("<QQ", CODE, SIZE) + bytes([0, 0x41, 0x0E, 16, 0x86, 2, 0, 0, 0])
    fde = struct.pack("<II", 4 + len(body), fde_at + 4 - cie_at) + body
    mem.put(fde)
    segbase = DATA
    table = mem.put(struct.pack("<ii", CODE - segbase, fde_at - segbase))
    info = mem.put(dyn_info(CODE, CODE + SIZE, dynamic.FORMAT_REMOTE_TABLE,
                            a=segbase, b=1, c=table))
    head = mem.put(struct.pack("<IIQ", 1, 1, info))
    errors = []
    module = dynamic.libunwind(space(mem), head, errors)[0]
    assert not errors
    assert module.image.method == "cfi"
    assert module.image.row_for(CODE).cfa.offset == 8
    assert module.image.row_for(CODE + 2).cfa.offset == 16


def test_gdb_jit_descriptor_with_a_cycle_and_a_bad_object_ends():
    mem = Memory()
    garbage = mem.put(b"not an ELF at all" * 4)
    entry = mem.put(struct.pack("<4Q", 0, 0, garbage, 68))
    mem.patch(entry, struct.pack("<Q", entry))          # next points at itself
    descriptor = mem.put(struct.pack("<IIQQ", 1, 0, entry, entry))
    errors = []
    assert dynamic.gdb_jit(space(mem), descriptor, ImageCache(), errors) == []
    assert len(errors) == 1 and "not an ELF" in errors[0]


def test_perf_map_names_ranges_and_skips_garbage_lines():
    module = dynamic.perf_map_module(
        f"{CODE:x} 10 first one\nnonsense\n{CODE + 0x20:x} 8 second\n\n", "/tmp/perf-1.map")
    assert (module.start, module.end) == (CODE, CODE + 0x28)
    assert module.image.symbols.lookup(CODE + 4) == ("first one", 4)
    assert module.image.symbols.lookup(CODE + 0x24) == ("second", 4)
    assert module.image.symbols.lookup(CODE + 0x18) is None
    assert dynamic.perf_map_module("garbage\n", "x") is None


WORD = st.one_of(st.integers(0, 2**64 - 1), st.integers(DATA, DATA + 0x4000),
                 st.integers(CODE, CODE + 0x1000))


@settings(max_examples=200, deadline=2000)
@given(words=st.lists(WORD, min_size=0, max_size=0x4000 // 8), pc=st.integers(CODE, CODE + 64))
def test_garbage_lists_never_raise_more_than_reading_errors(words, pc):
    mem = Memory()
    mem.data[:8 * len(words)] = struct.pack(f"<{len(words)}Q", *words)
    s = space(mem)
    expected = (MemoryFault, CfiError, ElfError, struct.error)
    for read in (lambda: dynamic.libunwind(s, DATA, []),
                 lambda: dynamic.gdb_jit(s, DATA, ImageCache(), [])):
        try:
            modules = read()
        except expected:
            continue
        assert len(modules) <= dynamic.MAX_ENTRIES
        for m in modules:
            m.image.row_for(pc)


def test_registration_is_searched_only_for_a_pc_no_file_holds():
    files = ["/usr/bin/true", "/lib/x86_64-linux-gnu/libc.so.6"]
    maps = [Mapping(0x4000_0000 * (i + 1), 0x4000_0000 * (i + 1) + 0x1000, "r-xp", 0, "08:01",
                    i + 1, path) for i, path in enumerate(files)]
    s = FakeSpace({}, maps)
    modules = ModuleMap(s)
    found = dynamic.registered(s, modules)
    assert all(m.image is None for m in modules.modules)
    assert modules.find(maps[0].start).image is not None
    assert modules.modules[1].image is None          # the walk visited one file: one opened
    assert found.find(CODE) is None                  # anonymous code: now every module is searched
    assert all(m.image is not None for m in modules.modules)
    assert found.modules == [] and found.errors == []
