"""What the kernel sends first on a connection of `serve`: in socket mode
('@PATH', Linux 6.16+) the core itself, from its ELF header; in request
mode ('@@PATH', Linux 6.17+, include/uapi/linux/coredump.h) a struct
coredump_req {u32 size, size_ack; u64 mask}, and the kernel waits for a
struct coredump_ack {u32 size, spare; u64 mask} before it writes anything.
It answers the ack with a u32 mark (0: taken, else why not); with
COREDUMP_KERNEL the core follows on the socket, as in socket mode; with
COREDUMP_REJECT there is no core at all.

Storm control decides before the work either way (early.py): in request
mode from /proc before the ack (a suppressed crash is declined, its core
never written), in socket mode from the core's first notes (a suppressed
crash's connection is closed, and the kernel stops writing)."""
from __future__ import annotations

import select
import socket
import struct

from . import early

COREDUMP_KERNEL, COREDUMP_USERSPACE, COREDUMP_REJECT, COREDUMP_WAIT = 1, 2, 4, 8
_REQ = struct.Struct("<IIQ")   # struct coredump_req, version 0
_ACK = struct.Struct("<IIQ")   # struct coredump_ack, version 0
MAX_REQ = 4096                 # as systemd-coredump bounds it
MARKS = {1: "the ack is too small for this kernel", 2: "the ack is too large for this kernel",
         3: "the ack has flags this kernel does not know", 4: "the ack has conflicting flags"}


class RequestError(Exception):
    pass


def _wait(conn: socket.socket, timeout: float) -> None:
    p = select.poll()
    p.register(conn.fileno(), select.POLLIN)
    if not p.poll(int(timeout * 1000)):
        raise RequestError(f"the kernel sent nothing for {timeout:g} s")


def is_request(conn: socket.socket, timeout: float) -> bool:
    """True for a coredump_req, False for a core (its ELF magic)."""
    _wait(conn, timeout)
    return conn.recv(4, socket.MSG_PEEK) != b"\x7fELF"[:4]


def read_request(conn: socket.socket) -> tuple[int, int]:
    """(size of the ack this kernel takes, mask of what it supports)."""
    req = conn.recv(MAX_REQ)
    if len(req) < _REQ.size:
        raise RequestError(f"a coredump request of {len(req)} bytes")
    size, size_ack, mask = _REQ.unpack_from(req)
    if size != len(req) or size_ack < _ACK.size:
        raise RequestError(f"a coredump request of {len(req)} bytes says size {size}, "
                           f"ack size {size_ack}")
    if mask & (COREDUMP_KERNEL | COREDUMP_REJECT | COREDUMP_WAIT) != \
            COREDUMP_KERNEL | COREDUMP_REJECT | COREDUMP_WAIT:
        raise RequestError(f"the kernel does not offer what we answer (mask {mask:#x})")
    return size_ack, mask


def answer(conn: socket.socket, mask: int, timeout: float) -> None:
    """Send the ack and read the kernel's mark."""
    conn.sendall(_ACK.pack(_ACK.size, 0, mask))
    _wait(conn, timeout)
    mark = conn.recv(4)
    if len(mark) != 4:
        raise RequestError("the kernel closed the connection instead of marking the ack")
    code, = struct.unpack("<I", mark)
    if code:
        raise RequestError(MARKS.get(code, f"the kernel refused the ack (mark {code})"))


def first(conn: socket.socket, pid: int, config, timeout: float
          ) -> tuple[early.Decision | None, bytes, str]:
    """Storm control's decision on the crash on `conn`, before the work:
    (decision, the core's bytes read for it, mode). A crash it suppresses
    has been declined (request mode) or its connection is to be closed
    (socket mode): the caller only counts it."""
    if not is_request(conn, timeout):
        key, head = early.from_notes(conn.fileno(), timeout)
        return early.decide(config, key), head, "socket"
    read_request(conn)
    decision = early.decide(config, early.from_proc(pid))
    if decision is not None and not decision.admitted:
        conn.sendall(_ACK.pack(_ACK.size, 0, COREDUMP_REJECT))
        return decision, b"", "request"
    # COREDUMP_WAIT: the crashed task is kept (and /proc/PID with it) until we close
    answer(conn, COREDUMP_KERNEL | COREDUMP_WAIT, timeout)
    return decision, b"", "request"
