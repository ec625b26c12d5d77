"""Copying target memory: process_vm_readv for many ranges in one call,
/proc/PID/mem for what it cannot serve."""
from __future__ import annotations

import ctypes
import os

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


def read_mem(pid: int, addr: int, size: int) -> bytes | None:
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.pread(fd, size, addr)
        return data if len(data) == size else None
    except (OSError, OverflowError):
        return None
    finally:
        os.close(fd)
