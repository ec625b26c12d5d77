"""The AddressSpace protocol: the engine's only door into a target.

The analogue of libunwind's remote accessors (access_mem, access_reg,
find_proc_info): a live process, a snapshot, a core file and a synthetic
test stack all look the same to the engine.
"""
from __future__ import annotations

import bisect
import struct

from .record import Record


class MemoryFault(Exception):
    """A read the address space cannot serve."""

    def __init__(self, addr: int, size: int = 1, why: str = "unmapped"):
        super().__init__(f"cannot read {size} bytes at {addr:#x}: {why}")
        self.addr = addr
        self.size = size
        self.why = why


class Mapping(Record):
    """One line of /proc/PID/maps (or its equivalent from a core): the
    collector reads maps before it stops a thread."""
    __slots__ = ()
    _fields = ("start", "end", "perms", "offset", "dev", "inode", "path")

    def __new__(cls, start: int, end: int, perms: str = "r--p", offset: int = 0,
                dev: str = "00:00", inode: int = 0, path: str = ""):
        return tuple.__new__(cls, (start, end, perms, offset, dev, inode, path))

    @property
    def executable(self) -> bool:
        return "x" in self.perms

    @property
    def is_file(self) -> bool:
        return self.inode != 0 and self.path.startswith("/")

    def __contains__(self, addr: int) -> bool:
        return self.start <= addr < self.end


class AddressSpace:
    """What every address space provides; followed by shape, not inherited
    (not a typing.Protocol: importing typing costs milliseconds before
    the collector can stop a thread)."""

    def read(self, addr: int, size: int) -> bytes:
        """Exactly `size` bytes at `addr`, or raise MemoryFault."""

    def maps(self) -> list[Mapping]:
        """Mappings sorted by start address."""

    def threads(self) -> list[int]:
        """Thread ids, main thread first."""

    def registers(self, tid: int) -> dict[int, int]:
        """Known registers of a thread by DWARF number (unwinder.regs)."""

    def file_for(self, mapping: Mapping) -> str | None:
        """A path that opens the exact file behind `mapping`, or None."""

    # Optional, for speed (collector.targets.snapshot.Snapshot has them):
    # read_u64(addr), exactly as read_u64(space, addr) below; copy_at(addr),
    # (start, end, data): the bytes at hand from start (data, which may be
    # shorter than end - start, even empty) for the addresses up to end, so
    # that a walk slices its words from them.


_U64 = struct.Struct("<Q")


def read_u64(space: AddressSpace, addr: int) -> int:
    if addr < 0 or addr > 0xFFFF_FFFF_FFFF_FFF8:
        raise MemoryFault(addr & 0xFFFF_FFFF_FFFF_FFFF, 8, "address out of range")
    return _U64.unpack(space.read(addr, 8))[0]


class MapIndex:
    """Address -> mapping lookup by binary search."""

    def __init__(self, mappings: list[Mapping]):
        self.mappings = sorted(mappings, key=lambda m: m.start)
        self._starts = [m.start for m in self.mappings]

    def find(self, addr: int) -> Mapping | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.mappings[i].end:
            return self.mappings[i]
        return None

    def above(self, addr: int, within: int) -> Mapping | None:
        """The first mapping starting above `addr`, if no more than `within` away."""
        i = bisect.bisect_right(self._starts, addr)
        if i < len(self.mappings) and self.mappings[i].start - addr <= within:
            return self.mappings[i]
        return None


class FakeSpace:
    """A dict-backed address space for tests: memory blocks and registers."""

    def __init__(self, blocks: dict[int, bytes] | None = None,
                 mappings: list[Mapping] | None = None,
                 regs: dict[int, dict[int, int]] | None = None,
                 files: dict[int, str] | None = None):
        self.blocks = dict(blocks or {})
        self._maps = sorted(mappings or [], key=lambda m: m.start)
        self._regs = dict(regs or {})
        self._files = dict(files or {})

    def read(self, addr: int, size: int) -> bytes:
        for start, data in self.blocks.items():
            if start <= addr and addr + size <= start + len(data):
                return bytes(data[addr - start:addr - start + size])
        raise MemoryFault(addr, size)

    def maps(self) -> list[Mapping]:
        return list(self._maps)

    def threads(self) -> list[int]:
        return list(self._regs)

    def registers(self, tid: int) -> dict[int, int]:
        return dict(self._regs[tid])

    def file_for(self, mapping: Mapping) -> str | None:
        return self._files.get(mapping.start, mapping.path if mapping.is_file else None)
