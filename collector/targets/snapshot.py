"""Registers and stack copies taken while the target was stopped.

Reads inside the copies are exact. A read outside them falls through to the
live process, which has been running again since the copy: such reads are
counted (late_reads) and reported, so a reader can tell; with live=False
they fail instead.
"""
from __future__ import annotations

import bisect
import os
import struct

from unwinder.space import Mapping, MemoryFault, read_u64

from .vmread import open_mem, pread_exact

PAGE = 4096
LATE_PAGES = 1024       # pages read late kept for the reads after (4 MiB)
_unpack = struct.Struct("<Q").unpack_from


class Snapshot:
    def __init__(self, pid: int, mappings: list[Mapping], regs: dict[int, dict[int, int]],
                 regions: list[tuple[int, bytes]], live: bool = True):
        self.pid = pid
        self._maps = sorted(mappings, key=lambda m: m.start)
        self._regs = regs
        self._regions = sorted(regions)
        self._starts = [start for start, _ in self._regions]
        # (start, last word, data, read late): the memory read_u64 read last, none yet
        self._hot: tuple[int, int, bytes, bool] = (1, 0, b"", False)
        self._live = live
        self._fd: int | None = None
        self._late: dict[int, bytes | None] = {}    # page -> its bytes read late, or None
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

    def read_u64(self, addr: int) -> int:
        """unwinder.space.read_u64 of this space; a word of a copy is
        unpacked where it lies, the copy (or page read late) last read
        first (a walk reads nearly all its words from one stack)."""
        start, last, data, late = self._hot
        if start <= addr <= last:
            if late:
                self.late_reads += 1
            return _unpack(data, addr - start)[0]
        i = bisect.bisect_right(self._starts, addr) - 1
        low = 0
        if i >= 0:
            start, data = self._regions[i]
            if addr + 8 <= start + len(data):
                self._hot = (start, start + len(data) - 8, data, False)
                return _unpack(data, addr - start)[0]
            low = start + len(data)
        page = addr & -PAGE
        data = self._late.get(page)
        if data is not None and addr + 8 <= page + PAGE:  # as read() would serve it
            self.late_reads += 1
            # the rest are read from the part of the page no copy holds
            start = max(low, page)
            end = min(page + PAGE, self._starts[i + 1]) if i + 1 < len(self._starts) else page + PAGE
            self._hot = (start, end - 8, data[start - page:], True)
            return _unpack(data, addr - page)[0]
        return read_u64(self, addr)

    def copy_at(self, addr: int) -> tuple[int, int, bytes]:
        """(start, end, data): the copy that holds `addr`, data from start
        to end; where no copy holds it, the gap around it, with no data."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            start, data = self._regions[i]
            if addr < start + len(data):
                return start, start + len(data), data
            low = start + len(data)
        else:
            low = 0
        high = self._starts[i + 1] if i + 1 < len(self._starts) else 1 << 64
        return low, high, b""

    def _read_live(self, addr: int, size: int) -> bytes | None:
        """From the running process: the page of a read within one page is
        read once and serves the reads after it (each still counted late)."""
        if not self._live or addr < 0 or addr + size > 1 << 64:
            return None
        if self._fd is None:
            self._fd = open_mem(self.pid)
            if self._fd is None:
                return None
        page = addr & -PAGE
        if addr + size <= page + PAGE:
            if page not in self._late:
                if len(self._late) >= LATE_PAGES:
                    self._late.clear()
                    self._hot = (1, 0, b"", False)
                self._late[page] = pread_exact(self._fd, page, PAGE)
            data = self._late[page]
            if data is not None:
                return data[addr - page:addr - page + size]
        return pread_exact(self._fd, addr, size)

    def close(self) -> None:
        self._late.clear()
        self._hot = (1, 0, b"", False)
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
