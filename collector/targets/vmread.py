"""Copying target memory: process_vm_readv for many ranges in one call,
/proc/PID/mem for what it cannot serve."""
from __future__ import annotations

import ctypes
import os

from unwinder.regs import RSP
from unwinder.space import Mapping, MapIndex

from . import GUARD_GAP, RED_ZONE

_libc = ctypes.CDLL(None, use_errno=True)
_readv = _libc.process_vm_readv
_readv.restype = ctypes.c_ssize_t
_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong,
                   ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
IOV_MAX = 1024


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def read_ranges(pid: int, ranges: list[tuple[int, int]]) -> list[bytes | None]:
    """Contents of each (addr, size); None for a range that cannot be read."""
    out: list[bytes | None] = []
    for i in range(0, len(ranges), IOV_MAX):
        out += _read_batch(pid, ranges[i:i + IOV_MAX])
    return out


def _read_batch(pid, ranges):
    n = len(ranges)
    buffers = [ctypes.create_string_buffer(size) for _, size in ranges]
    local = (_Iovec * n)(*[_Iovec(ctypes.addressof(b), size)
                           for b, (_, size) in zip(buffers, ranges)])
    remote = (_Iovec * n)(*[_Iovec(addr, size) for addr, size in ranges])
    got = _readv(pid, local, n, remote, n, 0)
    total = sum(size for _, size in ranges)
    if got == total:
        return [b.raw for b in buffers]
    # A partial read stops at the first fault: read each range on its own.
    return [read_mem(pid, addr, size) for addr, size in ranges]


def open_mem(pid: int) -> int | None:
    """/proc/PID/mem, opened once for many reads (None if it cannot be)."""
    try:
        return os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def pread_exact(fd: int, addr: int, size: int) -> bytes | None:
    """`size` bytes at `addr` of an open /proc/PID/mem, or None."""
    try:
        data = os.pread(fd, size, addr)
    except (OSError, OverflowError):
        return None
    return data if len(data) == size else None


def read_mem(pid: int, addr: int, size: int) -> bytes | None:
    fd = open_mem(pid)
    if fd is None:
        return None
    try:
        return pread_exact(fd, addr, size)
    finally:
        os.close(fd)


def copy_stacks(pid: int, mappings: list[Mapping] | MapIndex,
                regs: dict[int, dict[int, int] | int], window: int,
                mem: int | None = None) -> list[tuple[int, bytes]]:
    """Each thread's stack from just below rsp up to `window` bytes (or the
    end of its mapping), in one read: a pread of `mem` (an open
    /proc/PID/mem) for one range, else one process_vm_readv. `regs` gives
    each thread's registers, or just its rsp."""
    index = mappings if isinstance(mappings, MapIndex) else MapIndex(mappings)
    wanted = []
    for r in regs.values():
        sp = r if isinstance(r, int) else r[RSP]
        m = index.find(sp) or index.above(sp, GUARD_GAP)  # an overflow: rsp below its stack
        if m is not None:
            wanted.append((max(m.start, sp - RED_ZONE), min(m.end, max(sp, m.start) + window)))
    return copy_ranges(pid, wanted, mem)


def copy_ranges(pid: int, spans: list[tuple[int, int]],
                mem: int | None = None) -> list[tuple[int, bytes]]:
    ranges = merge_spans(spans)
    if mem is not None and len(ranges) == 1:
        (start, size), = ranges
        data = pread_exact(mem, start, size)
        if data is not None:
            return [(start, data)]
    return [(start, data) for (start, size), data in zip(ranges, read_ranges(pid, ranges))
            if data is not None]


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi - lo) for lo, hi in merged]
