"""pc -> function + offset from an ELF symbol table."""
from __future__ import annotations

import bisect

from ..elf import STB_GLOBAL, STB_WEAK, cstr

# Among aliases at one address, the name eu-stack and gdb show: global, then
# weak, then local; among equals the first in the table.
_RANK = {STB_GLOBAL: 0, STB_WEAK: 1}
_LOOKBACK = 64  # nested/overlapping symbols: how far back a container may start


class SymbolTable:
    def __init__(self, rows: list[tuple], names: bytes):
        self._rows = rows
        self._addrs = [row[0] for row in rows]
        self._names = names
        self._cache: dict[int, tuple[str, int] | None] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, addr: int) -> tuple[str, int] | None:
        """(function, offset) for a link-time address, or None."""
        try:
            return self._cache[addr]
        except KeyError:
            pass
        found = self._find(addr)
        self._cache[addr] = found
        return found

    def _find(self, addr: int) -> tuple[str, int] | None:
        i = bisect.bisect_right(self._addrs, addr) - 1
        best = None
        for j in range(i, max(i - _LOOKBACK, -1), -1):
            start, index, size, binding, name_off, room = self._rows[j]
            if best is not None and start != best[0]:
                break
            if addr < start + (size or min(room, self._next_start(start) - start)):
                key = (start, _RANK.get(binding, 2), index, name_off)
                if best is None or key < best:
                    best = key
        return None if best is None else (cstr(self._names, best[3]), addr - best[0])

    def _next_start(self, start: int) -> int:
        """Where the next symbol begins: an unsized symbol (e.g. __restore_rt)
        ends there or at its section's end, as eu-stack sees it."""
        k = bisect.bisect_right(self._addrs, start)
        return self._addrs[k] if k < len(self._addrs) else 1 << 64
