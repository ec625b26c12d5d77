"""FDEs registered at run time with libgcc (`__register_frame`,
`__register_frame_info[_table]_bases`), read through the AddressSpace.

This is how JITs (SBCL, LLVM's MCJIT/ORC, wasmtime...) make their code
unwindable on Linux. libgcc keeps a `struct object` per registration
(unwind-dw2-fde.h): {pc_begin, tbase, dbase, u, s, next}, `u` being the
.eh_frame list (`single`), a NULL-terminated array of such lists
(`s.b.from_array`) or, once libgcc has looked it up, a sorted `struct
fde_vector {orig_data, count, fde *array[]}` (`s.b.sorted`). gcc <= 12 links
the objects into two lists, `unseen_objects` and `seen_objects`; gcc >= 13
puts them in a b-tree, `static struct btree registered_frames {root,
free_list, lock}` whose nodes are {lock, u32 entry_count, u32 type, 15 inner
{separator, child} or 10 leaf {base, size, object} entries}.

The heads are static: found by name in a symbol table (static binaries, an
unstripped libgcc), else by decoding the exported functions: gcc 12's
`__register_frame_info_bases` loads the list head RIP-relative, stores the
object back there and links the old head at `ob->next` (+0x28);
`__deregister_frame_info_bases` walks both lists, loading and taking the
address of each head. Without that pattern, every .bss address the
function refers to is tried as a b-tree (not tried on a real gcc 13 yet).

Each object's FDEs are validated (readable, code range executable) and
become one module per contiguous run of code, named `[libgcc 0xBEGIN]`
(BEGIN: the address handed to __register_frame); the walk's frames through
them are plain `cfi`.
"""
from __future__ import annotations

import struct

from ..cfi import CfiError, CfiTable
from ..cfi.encoding import PointerBases
from ..cfi.entries import parse_cie, parse_fde, read_header
from ..elf import PT_LOAD, ElfError
from ..modules import Module, ModuleMap
from ..space import AddressSpace, MapIndex, MemoryFault, read_u64
from ..symbols.symtab import SymbolTable
from .common import MAX_ENTRIES, symbol_values
from .dyninfo import MAX_TABLE, TableInfo

MAX_FDES = 1 << 15          # FDEs of all objects together
MAX_DEPTH = 8               # b-tree levels (gcc's holds 10 * 15^7 objects in 8)
MAX_NODES = 4096
MAX_ERRORS = 4              # about single objects, per registry
CODE_WINDOW = 320           # bytes of a registration function decoded
RUN_GAP = 256               # code gaps within one module
_OBJECT = struct.Struct("<6Q")  # pc_begin, tbase, dbase, u, s, next
NEXT = 0x28
SORTED, FROM_ARRAY = 1, 2
NODE_SIZE, INNER, LEAF = 256, 0, 1
_NAMES = ("unseen_objects", "seen_objects", "registered_frames",
          "__register_frame_info_bases", "__deregister_frame_info_bases")
_ERRORS = (MemoryFault, CfiError, ElfError, struct.error, IndexError)
_NO_SYMBOLS = SymbolTable([], b"")
_KERNEL_CODE = ("[vdso]", "[vsyscall]")


class RegisteredFdes(TableInfo):
    """An object's FDEs: CFI, and no names (the registry holds none)."""

    def __init__(self, name: str, table: CfiTable):
        super().__init__(name, 0, 0, table)
        self.symbols = _NO_SYMBOLS


def libgcc_frames(space: AddressSpace, modules: ModuleMap, errors: list[str]) -> list[Module]:
    """Modules for the FDEs registered with every libgcc in `modules`. Only
    where some executable memory has no file behind it: elsewhere a module's
    own CFI describes all the code, and reading nothing keeps a live report
    free of reads made after the target was released."""
    if not any(m.executable and not m.is_file and m.path not in _KERNEL_CODE
               for m in space.maps()):
        return []
    out: list[Module] = []
    loaded = [m for m in modules.load_all() if m.image is not None and m.bias is not None]
    own = [(m.bias + s.addr, m.bias + s.addr + s.size) for m in loaded
           for s in [m.image.elf.sections.get(".eh_frame")] if s is not None]
    maps = MapIndex(space.maps())
    budget = [MAX_FDES]
    for module in loaded:
        try:
            lists, trees = registry(module)
            objects = registered_objects(space, lists, trees)
        except _ERRORS as e:
            errors.append(f"{module.path}: libgcc registry: {e}")
            continue
        failed = 0
        for i, ob in enumerate(objects):
            if budget[0] <= 0:
                errors.append(f"libgcc registry: {len(objects) - i} objects left unread "
                              f"(more than {MAX_FDES} FDEs)")
                break
            try:
                out += object_modules(space, ob, maps, own, budget)
            except _ERRORS as e:
                failed += 1
                if failed <= MAX_ERRORS:
                    errors.append(f"libgcc object {ob:#x}: {e}")
        if failed > MAX_ERRORS:
            errors.append(f"libgcc registry: {failed - MAX_ERRORS} more objects unreadable")
    return out


# ------------------------------------------------------------- the heads

def registry(module: Module) -> tuple[list[int], list[int]]:
    """(list heads, b-tree candidates) of a libgcc in `module`, runtime addresses."""
    found = symbol_values(module, _NAMES)
    lists = [found[n] for n in _NAMES[:2] if n in found]
    if lists or _NAMES[2] in found:
        return lists, [found[_NAMES[2]]] if _NAMES[2] in found else []
    register = found.get("__register_frame_info_bases")
    if register is None:
        return [], []
    elf, bias = module.image.elf, module.bias
    bss = [(s.vaddr + s.filesz + bias, s.vaddr + s.memsz + bias)
           for s in elf.segments if s.type == PT_LOAD and s.memsz > s.filesz]
    code = _code(elf, register - bias, CODE_WINDOW)
    deregister = found.get("__deregister_frame_info_bases")
    undo = _code(elf, deregister - bias, CODE_WINDOW) if deregister else b""
    refs, derefs = ([(op, t) for op, t in rip_refs(c, at) if _inside(bss, t)]
                    for c, at in ((code, register), (undo, deregister or 0)))
    return heads_from_code(code, refs, derefs)


def heads_from_code(code: bytes, refs: list[tuple[int, int]],
                    derefs: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """gcc <= 12: the head __register_frame_info_bases both loads and stores,
    when it also stores to +0x28 (ob->next), is unseen_objects; seen_objects
    is the other head __deregister_frame_info_bases loads and takes the
    address of. Otherwise the .bss it refers to (`refs`) are b-tree candidates."""
    loads = {t for op, t in refs if op == 0x8B}
    unseen = sorted(loads & {t for op, t in refs if op == 0x89})
    if unseen and _stores_next(code):
        seen = ({t for op, t in derefs if op == 0x8B} & {t for op, t in derefs if op == 0x8D}
                - {unseen[0]})
        return [unseen[0], *sorted(seen)[:1]], []
    return [], sorted({t for _, t in refs if t % 8 == 0})


def rip_refs(code: bytes, addr: int) -> list[tuple[int, int]]:
    """(opcode, target) of every 64-bit store (89), load (8B) and lea (8D)
    with a RIP-relative operand in `code`, which starts at `addr`."""
    out = []
    for i in range(len(code) - 6):
        if code[i] & 0xF8 == 0x48 and code[i + 1] in (0x89, 0x8B, 0x8D) \
                and code[i + 2] & 0xC7 == 0x05:
            out.append((code[i + 1], addr + i + 7 + struct.unpack_from("<i", code, i + 3)[0]))
    return out


def _stores_next(code: bytes) -> bool:
    """`mov %r64, 0x28(%r64)`: REX.W 89, ModRM mod=01 without SIB, disp8 0x28."""
    return any(code[i] & 0xF8 == 0x48 and code[i + 1] == 0x89 and code[i + 2] >> 6 == 1
               and code[i + 2] & 7 != 4 and code[i + 3] == NEXT for i in range(len(code) - 3))


def _code(elf, link: int, size: int) -> bytes:
    for seg in elf.segments:
        if seg.type == PT_LOAD and seg.vaddr <= link < seg.vaddr + seg.filesz:
            at = seg.offset + link - seg.vaddr
            return bytes(elf.data[at:at + min(size, seg.vaddr + seg.filesz - link)])
    return b""


# ------------------------------------------------------------- the objects

def registered_objects(space: AddressSpace, lists: list[int], trees: list[int]) -> list[int]:
    """Object addresses along the lists, or in the first candidate that is a
    non-empty b-tree; bounded, cycles ended."""
    seen: list[int] = []
    for head in lists:
        ob = read_u64(space, head)
        while ob and ob not in seen and len(seen) < MAX_ENTRIES:
            seen.append(ob)
            ob = read_u64(space, ob + NEXT)
    for tree in trees:
        try:
            objects = tree_objects(space, read_u64(space, tree))
        except (MemoryFault, CfiError):
            continue
        if objects:
            return objects
    return seen


def tree_objects(space: AddressSpace, root: int) -> list[int]:
    """The objects in the leaves of the b-tree under `root` (0: empty)."""
    out: list[int] = []
    todo, visited = [(root, 0)] if root else [], set()
    while todo:
        node, depth = todo.pop()
        if node in visited or depth > MAX_DEPTH or len(visited) >= MAX_NODES:
            raise CfiError(f"b-tree node {node:#x}: too deep, too many or a cycle")
        visited.add(node)
        raw = space.read(node, NODE_SIZE)
        count, kind = struct.unpack_from("<II", raw, 8)
        if kind == INNER and 0 < count <= 15:
            todo += [(struct.unpack_from("<Q", raw, 24 + 16 * i)[0], depth + 1)
                     for i in reversed(range(count))]
        elif kind == LEAF and count <= 10:
            out += [struct.unpack_from("<Q", raw, 32 + 24 * i)[0] for i in range(count)]
        else:
            raise CfiError(f"b-tree node {node:#x}: type {kind} with {count} entries")
        if len(out) > MAX_ENTRIES:
            raise CfiError("b-tree holds too many objects")
    return out


def object_modules(space: AddressSpace, ob: int, maps: MapIndex, own: list[tuple[int, int]],
                   budget: list[int]) -> list[Module]:
    """Modules for the FDEs of one object; none for a module's own .eh_frame
    (crtbeginT.o registers it in static binaries), which its image reads."""
    _, tbase, dbase, u, s, _ = _OBJECT.unpack(space.read(ob, _OBJECT.size))
    if s & SORTED:
        begin, count = struct.unpack("<QQ", space.read(u, 16))
        if _inside(own, begin):
            return []
        if count > min(MAX_ENTRIES, budget[0]):
            raise CfiError(f"sorted vector of {count} FDEs")
        fdes = list(struct.unpack(f"<{count}Q", space.read(u + 16, 8 * count))) if count else []
    else:
        begin = u
        lists = _array(space, u) if s & FROM_ARRAY else [u]
        if any(_inside(own, p) for p in lists):
            return []
        fdes = [f for p in lists for f in _list_fdes(space, p, budget[0])]
    budget[0] -= len(fdes)
    name = f"[libgcc {begin:#x}]"
    table, ranges = _table(space, fdes, tbase, dbase)
    bad = [r for r in ranges if not _executable(maps, *r)]
    if bad:
        raise CfiError(f"{len(bad)} of {len(ranges)} FDEs cover no executable code "
                       f"(first {bad[0][0]:#x}-{bad[0][1]:#x})")
    image = RegisteredFdes(name, table)
    return [Module(name, lo, hi, image=image, bias=0) for lo, hi in _runs(ranges)]


def _array(space: AddressSpace, addr: int) -> list[int]:
    out = []
    while len(out) < MAX_ENTRIES and (p := read_u64(space, addr + 8 * len(out))):
        out.append(p)
    return out


def _list_fdes(space: AddressSpace, addr: int, budget: int) -> list[int]:
    """FDE addresses of an .eh_frame list up to its zero terminator (libgcc
    reads no 64-bit lengths either); CIEs are skipped."""
    out, at = [], addr
    while at - addr < MAX_TABLE:
        length, ident = struct.unpack("<II", space.read(at, 8))
        if length == 0:
            return out
        if length >= 0xFFFF_FFF0:
            raise CfiError(f"entry length {length:#x} at {at:#x}")
        if ident:
            out.append(at)
            if len(out) > min(MAX_ENTRIES, budget):
                raise CfiError(f".eh_frame list at {addr:#x}: more than {len(out) - 1} FDEs")
        at += 4 + length
    raise CfiError(f".eh_frame list at {addr:#x}: no end within {MAX_TABLE} bytes")


def _table(space: AddressSpace, fdes: list[int], tbase: int,
           dbase: int) -> tuple[CfiTable, list[tuple[int, int]]]:
    """The FDEs and their CIEs copied as one span, indexed by start; pc_begin
    0 marks a deleted FDE (libgcc skips it too)."""
    if not fdes:
        raise CfiError("no FDEs")
    lo, hi = [], []
    for fde in fdes:
        length, delta = struct.unpack("<Ii", space.read(fde, 8))
        cie = fde + 4 - delta
        lo += [fde, cie]
        hi += [fde + 4 + length, cie + 4 + struct.unpack("<I", space.read(cie, 4))[0]]
    low, high = min(lo), max(hi)
    if high - low > MAX_TABLE:
        raise CfiError(f"FDEs spread over {high - low} bytes")
    data = space.read(low, high - low)
    bases = PointerBases(low, tbase, dbase)
    cies: dict = {}

    def cie_at(off: int):
        if off not in cies:
            cies[off] = parse_cie(data, off, True, bases)
        return cies[off]

    rows = []
    for fde in fdes:
        if read_header(data, fde - low) is None:
            continue
        parsed = parse_fde(data, fde - low, True, bases, cie_at)
        if parsed.start:
            rows.append((parsed.start, parsed.end, fde - low))
    rows.sort()
    if not rows:
        raise CfiError("no FDEs")
    table = CfiTable(data, True, bases, ([r[0] for r in rows], [r[2] for r in rows]))
    return table, [(s, e) for s, e, _ in rows]


def _inside(ranges: list[tuple[int, int]], addr: int) -> bool:
    return any(lo <= addr < hi for lo, hi in ranges)


def _executable(maps: MapIndex, start: int, end: int) -> bool:
    m = maps.find(start)
    return m is not None and m.executable and start < end <= m.end


def _runs(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted code ranges merged where they touch (or nearly: alignment padding)."""
    runs: list[list[int]] = []
    for start, end in ranges:
        if runs and start <= runs[-1][1] + RUN_GAP:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    return [(s, e) for s, e in runs]
