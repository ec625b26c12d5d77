"""The native journal protocol: one datagram per report on journald's
socket; a report too large for a datagram goes as a sealed memfd passed
with SCM_RIGHTS, as sd_journal_sendv does."""
from __future__ import annotations

import array
import errno
import fcntl
import os
import socket

from . import Sink, SinkError
from .journal import encode, fields

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
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            fcntl.fcntl(fd, F_ADD_SEALS, SEALS)
            s.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))],
                       0, path)
        finally:
            os.close(fd)


class JournaldSink(Sink):
    def send(self, reports: list[dict]) -> None:
        for report in reports:
            try:
                send_fields(self.settings["socket"], fields(report, self.settings["identifier"]))
            except OSError as e:
                raise SinkError(f"journald at {self.settings['socket']}: "
                                f"{e.strerror or e}") from None
