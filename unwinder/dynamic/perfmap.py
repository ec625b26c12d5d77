"""Perf maps (`/tmp/perf-PID.map`, text the agent reads and hands over):
names for JIT code, no unwind information."""
from __future__ import annotations

from ..elf import STB_GLOBAL
from ..modules import Module
from ..symbols.symtab import SymbolTable
from .common import RuntimeImage

MAX_ROWS = 1 << 20


def perf_map_module(text: str, name: str) -> Module | None:
    """`START SIZE NAME` lines (hex) as one module whose symbols are the names."""
    rows, names = [], bytearray()
    for index, line in enumerate(text.splitlines()):
        parts = line.split(None, 2)
        try:
            start, size = int(parts[0], 16), int(parts[1], 16)
        except (ValueError, IndexError):
            continue
        if len(parts) < 3 or not size or len(rows) >= MAX_ROWS:
            continue
        rows.append((start, index, size, STB_GLOBAL, len(names), 0))
        names += parts[2].encode() + b"\0"
    if not rows:
        return None
    rows.sort()
    return Module(name, rows[0][0], max(r[0] + r[2] for r in rows),
                  image=RuntimeImage(name, SymbolTable(rows, bytes(names))), bias=0)
