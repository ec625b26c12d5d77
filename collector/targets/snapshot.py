"""Registers and stack copies taken while the target was stopped.

Reads inside the copies are exact. A read outside them falls through to the
live process, which has been running again since the copy: such reads are
counted (late_reads) and reported, so a reader can tell; with live=False
they fail instead.
"""
from __future__ import annotations

import bisect
import os

from unwinder.space import Mapping, MemoryFault

from .vmread import open_mem, pread_exact


class Snapshot:
    def __init__(self, pid: int, mappings: list[Mapping], regs: dict[int, dict[int, int]],
                 regions: list[tuple[int, bytes]], live: bool = True):
        self.pid = pid
        self._maps = sorted(mappings, key=lambda m: m.start)
        self._regs = regs
        self._regions = sorted(regions)
        self._starts = [start for start, _ in self._regions]
        self._live = live
        self._fd: int | None = None
        self.late_reads = 0
        self.missing_reads = 0

    @property
    def bytes_copied(self) -> int:
        return sum(len(data) for _, data in self._regions)

    def read(self, addr: int, size: int) -> bytes:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            start, data = self._regions[i]
            if addr + size <= start + len(data):
                return data[addr - start:addr - start + size]
        data = self._read_live(addr, size)
        if data is None:
            self.missing_reads += 1
            raise MemoryFault(addr, size, "not in the snapshot")
        self.late_reads += 1
        return data

    def _read_live(self, addr: int, size: int) -> bytes | None:
        if not self._live or addr < 0 or addr + size > 1 << 64:
            return None
        if self._fd is None:
            self._fd = open_mem(self.pid)
            if self._fd is None:
                return None
        return pread_exact(self._fd, addr, size)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def maps(self) -> list[Mapping]:
        return list(self._maps)

    def threads(self) -> list[int]:
        return list(self._regs)

    def registers(self, tid: int) -> dict[int, int]:
        return dict(self._regs[tid])

    def file_for(self, mapping: Mapping) -> str | None:
        # map_files opens the exact file even if deleted or in another mount namespace
        return f"/proc/{self.pid}/map_files/{mapping.start:x}-{mapping.end:x}"
