"""Unwind information registered at run time, read through the AddressSpace:

- gdbjit: the GDB JIT interface, in-memory ELF objects as `[jit 0xADDR]` modules;
- dyninfo: libunwind's `_U_dyn_info_list`, proc-info (frames tagged `jit`)
  and table-info (FDEs in memory, tagged `cfi`) procedures;
- libgcc: FDEs handed to libgcc's `__register_frame` family (its registry
  of `struct object`s), as `[libgcc 0xBEGIN]` modules;
- perfmap: `/tmp/perf-PID.map` names, no unwind information.

`registered()` finds the registration symbols lazily. The walk asks for a
registered module only at a pc no file-backed module holds (JIT code, or a
wild pc), so a walk through files alone opens no file it does not visit.
On that first need every module is loaded and its symbol tables searched:
a JIT descriptor may be defined in any module (the executable, .symtab
only, or any library), and nothing short of a file's symbol table says
which. Measured with a cold ImageCache (2-core machine, noisy), loading
every module costs ~1 ms for `sleep` (4 modules), 4-8 ms for a python with
a few extensions (29) and 7-11 ms for gdb (60); searching their symbol
tables 0.03, 0.8 and 1.5 ms more. A walk through files loads only the
handful of modules it visits; that price is paid once a walk leaves them.
"""
from __future__ import annotations

import bisect
import struct

from ..cfi import CfiError
from ..elf import ElfError
from ..modules import Module, ModuleMap
from ..space import AddressSpace, MemoryFault
from . import dyninfo, gdbjit
from .common import MAX_ENTRIES, symbol_values
from .libgcc import libgcc_frames
from .dyninfo import FORMAT_DYNAMIC, FORMAT_IP_OFFSET, FORMAT_REMOTE_TABLE, FORMAT_TABLE, libunwind
from .gdbjit import gdb_jit
from .perfmap import perf_map_module

__all__ = ["FORMAT_DYNAMIC", "FORMAT_IP_OFFSET", "FORMAT_REMOTE_TABLE", "FORMAT_TABLE",
           "MAX_ENTRIES", "Registered", "gdb_jit", "libunwind", "perf_map_module",
           "registered", "symbol_values"]

# Each source names the symbols that locate it in some module and reads its
# modules from their runtime addresses: from_symbols(space, found, cache, errors).
# (libgcc's registry is found by decoding libgcc's code as well: read apart.)
SOURCES = (gdbjit, dyninfo)


class Registered:
    """Modules for code described at run time, found by runtime address:
    GDB JIT objects and libunwind procedures first, perf-map names last.
    `search() -> (described, errors)`, if given, adds to `described` and
    `errors` on the first find() or the first look at `modules` or `errors`."""

    def __init__(self, described: list[Module], named: list[Module], errors: list[str],
                 search=None):
        self._described = described
        self._named = named
        self._errors = errors
        self._search = search
        self._by_start: list[Module] | None = None
        self._starts: list[int] = []

    def _searched(self) -> list[Module]:
        if self._by_start is None:
            if self._search is not None:
                described, errors = self._search()
                self._described = self._described + described
                self._errors = self._errors + errors
            self._by_start = sorted(self._described, key=lambda m: m.start)
            self._starts = [m.start for m in self._by_start]
        return self._by_start

    @property
    def modules(self) -> list[Module]:
        self._searched()
        return self._described + self._named

    @property
    def errors(self) -> list[str]:
        self._searched()
        return self._errors

    def find(self, pc: int) -> Module | None:
        by_start = self._searched()
        i = bisect.bisect_right(self._starts, pc) - 1
        if i >= 0 and pc < by_start[i].end:
            return by_start[i]
        return next((m for m in self._named if m.start <= pc < m.end), None)


def registered(space: AddressSpace, modules: ModuleMap, perf_map: str | None = None,
               perf_map_name: str = "perf map") -> Registered:
    named = [perf_map_module(perf_map, perf_map_name)] if perf_map else []
    return Registered([], [m for m in named if m is not None], [],
                      search=lambda: _search(space, modules))


def _search(space: AddressSpace, modules: ModuleMap) -> tuple[list[Module], list[str]]:
    described: list[Module] = []
    errors: list[str] = []
    names = tuple(name for source in SOURCES for name in source.SYMBOLS)
    for module in modules.load_all():
        if module.image is None or module.bias is None:
            continue
        try:
            found = symbol_values(module, names)
            for source in SOURCES:
                if any(name in found for name in source.SYMBOLS):
                    described += source.from_symbols(space, found, modules.cache, errors)
        except (MemoryFault, ElfError, CfiError, struct.error, IndexError) as e:
            errors.append(f"{module.path}: run-time unwind info: {e}")
    described += libgcc_frames(space, modules, errors)
    return described, errors
