"""What the sources of run-time unwind info share: bounded list walks, and
the image of code that no file backs."""
from __future__ import annotations

from ..cfi import CfiError, Row
from ..space import AddressSpace, read_u64
from ..symbols.symtab import SymbolTable

MAX_ENTRIES = 4096          # JIT objects or libunwind procedures, each list


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
