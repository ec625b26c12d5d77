"""libgcc's registry of FDEs read through a fake address space, laid out as
unwind-dw2-fde.h and unwind-dw2-btree.h say: the object lists of gcc <= 12
(single, array and sorted-vector forms; every instruction boundary of the
fixture's code), gcc 13's b-tree (synthetic only: no gcc 13 here), the heads
decoded from code, validation, and garbage that must end in an error."""
import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from test_dynamic import CODE, DATA, Memory, space
from unwinder.dynamic import libgcc
from unwinder.cfi import CfiError
from unwinder.elf import ElfError
from unwinder.modules import ImageCache, Module, ModuleMap
from unwinder.space import FakeSpace, MapIndex, Mapping, MemoryFault

SIZE = 51                   # tests/fixtures/regframe.c's code
OMIT = 0xFF << 3            # s.b.encoding = DW_EH_PE_omit, as __register_frame_info_bases sets
CIE = bytes([0x14, 0, 0, 0, 0, 0, 0, 0, 1, ord("z"), ord("R"), 0, 1, 0x78, 16, 1, 0x00,
             0x0C, 7, 8, 0x90, 1, 0, 0])
PROGRAM = bytes([0x41, 0x0E, 16, 0x86, 2, 0x41, 0x0E, 24, 0x83, 3, 0x44, 0x0E, 64,
                 0x40 | 42, 0x0E, 24, 0x41, 0x0E, 16, 0xC3, 0x41, 0x0E, 8, 0xC6])
# offset in the code -> CFA offset from rsp, as the fixture's comments say
CFA = {0: 8, 1: 16, 2: 24, 6: 64, 16: 64, 21: 64, 29: 64, 32: 64, 42: 64, 44: 64,
       48: 24, 49: 16, 50: 8}
LGCC12 = "/lib/x86_64-linux-gnu/libgcc_s.so.1"


def fde(at: int, cie_at: int, start: int, size: int = SIZE) -> bytes:
    body = struct.pack("<QQ", start, size) + b"\0" + PROGRAM
    body += b"\0" * (-(len(body) + 8) % 8)
    return struct.pack("<Ii", 4 + len(body), at + 4 - cie_at) + body


def eh_frame(mem: Memory, starts=(CODE,)) -> tuple[int, list[int]]:
    """A CIE, one FDE per start, a terminator: (list address, FDE addresses)."""
    cie_at = mem.put(CIE)
    fdes = []
    for start in starts:
        at = mem.top + DATA
        fdes.append(mem.put(fde(at, cie_at, start)))
    mem.put(b"\0" * 4)
    return cie_at, fdes


def obj(u: int, s: int = OMIT, nxt: int = 0, pc_begin: int = 2**64 - 1) -> bytes:
    return struct.pack("<6Q", pc_begin, 0, 0, u, s, nxt)


def modules_of(mem: Memory, ob: int, own=()) -> list[Module]:
    s = space(mem)
    return libgcc.object_modules(s, ob, MapIndex(s.maps()), list(own), [libgcc.MAX_FDES])


@pytest.mark.parametrize("offset", sorted(CFA))
@pytest.mark.parametrize("form", ["single", "array", "sorted"])
def test_each_form_gives_the_fixture_rows_at_each_instruction_boundary(form, offset):
    mem = Memory()
    begin, fdes = eh_frame(mem)
    if form == "single":
        ob = mem.put(obj(begin))
    elif form == "array":   # named by the array __register_frame_table was given
        begin = mem.put(struct.pack("<QQ", begin, 0))
        ob = mem.put(obj(begin, OMIT | libgcc.FROM_ARRAY))
    else:   # what init_object leaves: sorted, encoding absptr, count 1, u.sort
        vector = mem.put(struct.pack("<QQQ", begin, 1, fdes[0]))
        ob = mem.put(obj(vector, libgcc.SORTED | 1 << 11, pc_begin=CODE))
    [module] = modules_of(mem, ob)
    assert (module.path, module.start, module.end) == (f"[libgcc {begin:#x}]", CODE, CODE + SIZE)
    row = module.image.row_for(CODE + offset)
    assert row.cfa.offset == CFA[offset] and module.image.method == "cfi"
    assert module.image.symbols.lookup(CODE + offset) is None   # no names: none invented


def test_fdes_far_apart_give_one_module_per_run_of_code():
    mem = Memory()
    begin, _ = eh_frame(mem, (CODE, CODE + 64, CODE + 0x800))
    modules = modules_of(mem, mem.put(obj(begin)))
    assert [(m.start - CODE, m.end - CODE) for m in modules] == [(0, 64 + SIZE),
                                                                (0x800, 0x800 + SIZE)]
    assert modules[0].image is modules[1].image


def test_a_deleted_fde_is_skipped_and_code_that_is_not_executable_is_refused():
    mem = Memory()
    begin, _ = eh_frame(mem, (0, CODE))      # pc_begin 0: deleted, libgcc skips it too
    assert len(modules_of(mem, mem.put(obj(begin)))) == 1
    mem = Memory()
    begin, _ = eh_frame(mem, (DATA,))          # "code" in rw- memory
    with pytest.raises(CfiError, match="no executable code"):
        modules_of(mem, mem.put(obj(begin)))


def test_a_modules_own_eh_frame_is_left_to_its_image():
    mem = Memory()
    begin, _ = eh_frame(mem)
    assert modules_of(mem, mem.put(obj(begin)), own=[(begin - 16, begin + 256)]) == []


def test_a_list_without_its_terminator_ends_with_an_error():
    mem = Memory()
    cie_at = mem.put(CIE)
    while mem.top + 64 < len(mem.data):
        mem.put(fde(DATA + mem.top, cie_at, CODE))
    with pytest.raises((CfiError, MemoryFault)):
        modules_of(mem, mem.put(obj(cie_at)))


def test_lists_are_followed_from_both_heads_and_a_cycle_ends():
    mem = Memory()
    second = mem.put(obj(0))
    first = mem.put(obj(0, nxt=second))
    looped = mem.put(obj(0))
    mem.patch(looped, obj(0, nxt=looped))
    unseen, seen = mem.put(struct.pack("<Q", first)), mem.put(struct.pack("<Q", looped))
    assert libgcc.registered_objects(space(mem), [unseen, seen], []) == [first, second, looped]


def node(kind: int, entries: list[tuple]) -> bytes:
    raw = struct.pack("<QII", 0, len(entries), kind)
    for e in entries:
        raw += struct.pack(f"<{len(e)}Q", *e)
    return raw.ljust(libgcc.NODE_SIZE, b"\0")


def test_a_b_tree_gives_the_objects_of_its_leaves_in_order():
    mem = Memory()
    obs = [mem.put(obj(0)) for _ in range(3)]
    left = mem.put(node(libgcc.LEAF, [(CODE, 16, obs[0]), (CODE + 16, 16, obs[1])]))
    right = mem.put(node(libgcc.LEAF, [(CODE + 64, 16, obs[2])]))
    root = mem.put(node(libgcc.INNER, [(CODE + 31, left), (2**64 - 1, right)]))
    mutex = mem.put(b"\0" * 40)                 # an unlocked pthread mutex reads as empty
    tree = mem.put(struct.pack("<3Q", root, 0, 4))
    assert libgcc.registered_objects(space(mem), [], [mutex, tree]) == obs
    assert libgcc.registered_objects(space(mem), [], [mutex]) == []


@pytest.mark.parametrize("bad", ["type", "count", "cycle"])
def test_a_bad_b_tree_node_is_an_error(bad):
    mem = Memory()
    at = DATA + ((mem.top + 7) & ~7)
    if bad == "type":
        mem.put(node(2, []))                    # btree_node_free
    elif bad == "count":
        mem.put(node(libgcc.LEAF, [(CODE, 1, 0)] * 11))
    else:
        mem.put(node(libgcc.INNER, [(2**64 - 1, at)]))
    with pytest.raises(CfiError):
        libgcc.tree_objects(space(mem), at)


# gcc 12.2's __register_frame_info_bases at 0x18ae1 and its store of ob->next:
#   mov 0x6790(%rip),%rax; mov %rbx,0x6789(%rip); mov %rax,0x28(%rbx)
REGISTER12 = bytes.fromhex("488b0590670000" "48891d89670000" "48894328")
# and __deregister_frame_info_bases: mov 0x65a1(%rip),%rbx; lea 0x6595(%rip),%rax (at 0x18cc8)
DEREGISTER12 = bytes.fromhex("488b1da1650000" "4885db" "744c" "488d0595650000")


def test_gcc12_heads_are_decoded_from_the_functions():
    refs = libgcc.rip_refs(REGISTER12, 0x18AE1)
    assert refs == [(0x8B, 0x1F278), (0x89, 0x1F278)]
    derefs = libgcc.rip_refs(DEREGISTER12, 0x18CC8)
    assert libgcc.heads_from_code(REGISTER12, refs, derefs) == ([0x1F278, 0x1F270], [])


def test_without_the_list_pattern_every_bss_reference_is_a_b_tree_candidate():
    # lea registered_frames(%rip),%rdi; call btree_insert: what gcc 13 may emit
    code = bytes.fromhex("488d3df90f0000" "e800000000")
    refs = libgcc.rip_refs(code, 0x1000)
    assert refs == [(0x8D, 0x2000)]
    assert libgcc.heads_from_code(code, refs, []) == ([], [0x2000])
    # a load and store of one head without ob->next is not the list either
    assert libgcc.heads_from_code(REGISTER12[:14], libgcc.rip_refs(REGISTER12[:14], 0x18AE1),
                                  []) == ([], [0x1F278])


@pytest.mark.skipif(not os.path.exists(LGCC12), reason="no libgcc_s.so.1 here")
def test_the_installed_libgcc_gives_two_list_heads_in_its_bss():
    image = ImageCache().from_file(LGCC12, LGCC12)
    lists, trees = libgcc.registry(Module(LGCC12, 0, 1, image=image, bias=0))
    if trees:
        pytest.skip("this libgcc keeps a b-tree (gcc 13 or later)")
    bss = [(s.vaddr + s.filesz, s.vaddr + s.memsz) for s in image.elf.segments
           if s.type == 1 and s.memsz > s.filesz]
    assert len(lists) == 2 and lists[0] != lists[1], lists
    assert all(lo <= h < hi for h in lists for lo, hi in bss)


def test_nothing_is_read_without_executable_memory_that_no_file_backs():
    class NoReads(FakeSpace):
        def read(self, addr, size):
            raise AssertionError(f"read {addr:#x}")
    s = NoReads({}, [Mapping(DATA, DATA + 0x1000, "rw-p"),
                     Mapping(0xFFFF_FFFF_FF60_0000, 0xFFFF_FFFF_FF60_1000, "--xp",
                             path="[vsyscall]")])
    assert libgcc.libgcc_frames(s, ModuleMap(s), []) == []


WORD = st.one_of(st.integers(0, 2**64 - 1), st.integers(DATA, DATA + 0x4000),
                 st.integers(CODE, CODE + 0x1000), st.sampled_from([0, 1, 2, 0x7F8, 0x7FA]))


@settings(max_examples=200, deadline=2000)
@given(words=st.lists(WORD, min_size=0, max_size=0x4000 // 8), pc=st.integers(CODE, CODE + 64))
def test_garbage_registries_never_raise_more_than_reading_errors(words, pc):
    mem = Memory()
    mem.data[:8 * len(words)] = struct.pack(f"<{len(words)}Q", *words)
    s = space(mem)
    expected = (MemoryFault, CfiError, ElfError, struct.error, IndexError)
    for lists, trees in (([DATA], []), ([], [DATA]), ([], [DATA + 8])):
        try:
            objects = libgcc.registered_objects(s, lists, trees)
        except expected:
            continue
        assert len(objects) <= libgcc.MAX_ENTRIES + 1
        for ob in objects[:8]:
            try:
                modules = libgcc.object_modules(s, ob, MapIndex(s.maps()), [],
                                                [libgcc.MAX_FDES])
            except expected:
                continue
            for m in modules:
                m.image.row_for(pc)
