"""Unwind information registered at run time, read through the AddressSpace:

- gdbjit: the GDB JIT interface, in-memory ELF objects as `[jit 0xADDR]` modules;
- dyninfo: libunwind's `_U_dyn_info_list`, proc-info (frames tagged `jit`)
  and table-info (FDEs in memory, tagged `cfi`) procedures;
- perfmap: `/tmp/perf-PID.map` names, no unwind information.
"""
from __future__ import annotations

import bisect
import struct

from ..cfi import CfiError
from ..elf import ElfError
from ..modules import Module, ModuleMap
from ..space import AddressSpace, MemoryFault
from . import dyninfo, gdbjit
from .common import MAX_ENTRIES
from .dyninfo import FORMAT_DYNAMIC, FORMAT_IP_OFFSET, FORMAT_REMOTE_TABLE, FORMAT_TABLE, libunwind
from .gdbjit import gdb_jit
from .perfmap import perf_map_module

__all__ = ["FORMAT_DYNAMIC", "FORMAT_IP_OFFSET", "FORMAT_REMOTE_TABLE", "FORMAT_TABLE",
           "MAX_ENTRIES", "Registered", "gdb_jit", "libunwind", "perf_map_module",
           "registered", "symbol_values"]

# Each source names the symbols that locate it in some module and reads its
# modules from their runtime addresses: from_symbols(space, found, cache, errors).
# libgcc's __register_frame registry is one more entry here.
SOURCES = (gdbjit, dyninfo)
_SYM = struct.Struct("<IBBHQQ")


class Registered:
    """Modules for code described at run time, found by runtime address:
    GDB JIT objects and libunwind procedures first, perf-map names last."""

    def __init__(self, described: list[Module], named: list[Module], errors: list[str]):
        self.modules = described + named
        self.errors = errors
        self._described = sorted(described, key=lambda m: m.start)
        self._starts = [m.start for m in self._described]
        self._named = named

    def find(self, pc: int) -> Module | None:
        i = bisect.bisect_right(self._starts, pc) - 1
        if i >= 0 and pc < self._described[i].end:
            return self._described[i]
        return next((m for m in self._named if m.start <= pc < m.end), None)


def registered(space: AddressSpace, modules: ModuleMap, perf_map: str | None = None,
               perf_map_name: str = "perf map") -> Registered:
    described, errors = _search(space, modules)
    named = [perf_map_module(perf_map, perf_map_name)] if perf_map else []
    return Registered(described, [m for m in named if m is not None], errors)


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
    return described, errors


def symbol_values(module: Module, names: tuple[str, ...]) -> dict[str, int]:
    """Runtime addresses of defined symbols (any type) by name, from .symtab
    and .dynsym; a string-table search first keeps the common case cheap."""
    elf, out = module.image.elf, {}
    for table in (".symtab", ".dynsym"):
        section = elf.sections.get(table)
        if section is None or section.link >= len(elf.by_index):
            continue
        strtab = bytes(elf.contents(elf.by_index[section.link]))
        wanted = {}
        for name in names:
            at = strtab.find(b"\0" + name.encode() + b"\0")
            if at >= 0 and name not in out:
                wanted[at + 1] = name
        if not wanted:
            continue
        data = elf.contents(section)
        for name_off, _, _, shndx, value, _ in _SYM.iter_unpack(data[:len(data) - len(data) % 24]):
            if name_off in wanted and shndx:
                out.setdefault(wanted[name_off], value + module.bias)
    return out
