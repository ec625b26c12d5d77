"""The GDB JIT interface: `__jit_debug_descriptor` lists in-memory ELF
objects (with `.eh_frame` and symbols); each becomes a module named
`[jit 0xADDR]`, unwound and named like a file."""
from __future__ import annotations

from ..elf import ElfError
from ..modules import MAX_IN_MEMORY_IMAGE, ImageCache, Module
from ..space import AddressSpace, MemoryFault, read_u64
from .common import linked

SYMBOLS = ("__jit_debug_descriptor",)


def from_symbols(space: AddressSpace, found: dict[str, int], cache: ImageCache,
                 errors: list[str]) -> list[Module]:
    descriptor = found.get("__jit_debug_descriptor")
    return gdb_jit(space, descriptor, cache, errors) if descriptor else []


def gdb_jit(space: AddressSpace, descriptor: int, cache: ImageCache,
            errors: list[str]) -> list[Module]:
    """struct jit_descriptor { u32 version, action; entry *relevant, *first; }
    struct jit_code_entry { entry *next, *prev; u64 symfile_addr, symfile_size; }"""
    out = []
    entry = read_u64(space, descriptor + 16)
    for addr in linked(space, entry):
        symfile, size = read_u64(space, addr + 16), read_u64(space, addr + 24)
        name = f"[jit {symfile:#x}]"
        if not 0 < size <= MAX_IN_MEMORY_IMAGE:
            errors.append(f"{name}: implausible size {size}")
            continue
        try:
            image = cache.from_memory(space.read(symfile, size), name)
        except (ElfError, MemoryFault) as e:
            errors.append(f"{name}: {e}")
            continue
        code = [s for s in image.elf.sections.values() if s.flags & 4 and s.size]  # SHF_EXECINSTR
        if code:
            out.append(Module(name, min(s.addr for s in code),
                              max(s.addr + s.size for s in code), image=image, bias=0))
    return out
