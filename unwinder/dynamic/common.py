"""What the sources of run-time unwind info share: bounded list walks, and
the image of code that no file backs."""
from __future__ import annotations

import struct

from ..cfi import CfiError, Row
from ..modules import Module
from ..space import AddressSpace, read_u64
from ..symbols.symtab import SymbolTable

MAX_ENTRIES = 4096          # JIT objects or libunwind procedures, each list
_SYM = struct.Struct("<IBBHQQ")


def linked(space: AddressSpace, first: int):
    """Addresses along a `next` chain at offset 0, bounded, cycles ended."""
    seen, addr = set(), first
    while addr and addr not in seen and len(seen) < MAX_ENTRIES:
        seen.add(addr)
        yield addr
        addr = read_u64(space, addr)


class RuntimeImage:
    """What the walk and the report need of an image, for code with no file:
    names, and rows whose frames are tagged `method`."""
    build_id = None
    method = "cfi"

    def __init__(self, name: str, symbols: SymbolTable):
        self.path = name
        self.errors: list[str] = []
        self.symbols = symbols

    def row_for(self, pc: int) -> Row | None:
        """As Image.row_for: bad unwind info is an error on the image, not a raise."""
        try:
            return self._row(pc)
        except CfiError as e:
            self.errors.append(f"{self.path}: at {pc:#x}: {e}")
            return None

    def _row(self, pc: int, depth: int = 0) -> Row | None:
        return None


def symbol_values(module: Module, names: tuple[str, ...]) -> dict[str, int]:
    """Runtime addresses of defined symbols (any type) by name, from .symtab
    and .dynsym; a string-table search first keeps the common case cheap,
    and what was found in a file is kept with it (a resident service asks
    the same files again and again)."""
    elf = module.image.elf
    known = elf.values_by_name
    missing = tuple(n for n in names if n not in known)
    if missing:
        found = _link_values(elf, missing)
        known.update({n: found.get(n) for n in missing})
    return {n: known[n] + module.bias for n in names if known[n] is not None}


def _link_values(elf, names: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for table in (".symtab", ".dynsym"):
        section = elf.sections.get(table)
        if section is None or section.link >= len(elf.by_index):
            continue
        strtab = bytes(elf.contents(elf.by_index[section.link]))
        wanted = {}
        for name in names:
            # also inside a longer string: ld shares tails (seen_objects in unseen_objects)
            key, at = name.encode() + b"\0", -1
            while name not in out and len(wanted) < 16 * len(names) \
                    and (at := strtab.find(key, at + 1)) >= 0:
                wanted[at] = name
        if not wanted:
            continue
        data = elf.contents(section)
        for name_off, _, _, shndx, value, _ in _SYM.iter_unpack(data[:len(data) - len(data) % 24]):
            if name_off in wanted and shndx:
                out.setdefault(wanted[name_off], value)
    return out
