"""The journal's wire formats, shared by the journald sink, the http sink's
journal-remote flavour and the collector's own diagnostics: fields
serialized as NAME=value, or NAME, a little-endian u64 length and the raw
bytes when the value holds a newline (the native protocol and the Journal
Export Format agree on this); sent as one datagram on journald's socket, or,
too large for a datagram, as a sealed memfd passed with SCM_RIGHTS, as
sd_journal_sendv does."""
from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import struct

from .files import write_all

F_ADD_SEALS = 1033
SEALS = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL | SHRINK | GROW | WRITE


def send_fields(path: str, pairs: list[tuple[str, str]]) -> None:
    """OSError if journald is not there or refuses."""
    data = encode(pairs)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(data, path)
            return
        except OSError as e:
            if e.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
        fd = os.memfd_create("journal-data", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            write_all(fd, data)
            fcntl.fcntl(fd, F_ADD_SEALS, SEALS)
            s.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))],
                       0, path)
        finally:
            os.close(fd)


def encode(pairs: list[tuple[str, str]]) -> bytes:
    out = []
    for name, value in pairs:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out.append(name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            out.append(name.encode() + b"=" + data + b"\n")
    return b"".join(out)
