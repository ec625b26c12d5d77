"""pc -> function + offset from an ELF symbol table."""
from __future__ import annotations

import bisect

from .elf import STB_GLOBAL, STB_WEAK, cstr

# Among aliases at one address, the name eu-stack and gdb show: global, then
# weak, then local; among equals the first in the table.
_RANK = {STB_GLOBAL: 0, STB_WEAK: 1}
_LOOKBACK = 64  # nested/overlapping symbols: how far back a container may start


class SymbolTable:
    def __init__(self, rows: list[tuple[int, int, int, int, int]], names: bytes):
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
        if i < 0:
            return None
        best = None
        for j in range(i, max(i - _LOOKBACK, -1), -1):
            start, index, size, binding, name_off = self._rows[j]
            if best is not None and start != best[0]:
                break
            if start <= addr < start + size:
                key = (start, _RANK.get(binding, 2), index, name_off)
                if best is None or key < best:
                    best = key
        if best is None:
            start, index, size, binding, name_off = self._rows[i]
            if size:
                return None  # past the end of the nearest function: padding or unknown code
            # an unsized symbol (e.g. __restore_rt): take the first alias at its address
            k = i
            while k > 0 and self._rows[k - 1][0] == start and not self._rows[k - 1][2]:
                k -= 1
            best = min((r[0], _RANK.get(r[3], 2), r[1], r[4]) for r in self._rows[k:i + 1])
        return cstr(self._names, best[3]), addr - best[0]
