"""JSON lines appended to a file: one write(2) per report on an O_APPEND
descriptor under an flock of the directory held by every writer (so a report of any size
never interleaves with another, and rotation never races a write),
rotated by size to PATH.1 .. PATH.keep, never world-readable."""
from __future__ import annotations

import fcntl
import os
import stat

from . import Sink, SinkError, line


class FileSink(Sink):
    def send(self, reports: list[dict]) -> None:
        path, mode = self.settings["path"], self.settings["mode"]
        try:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, mode=0o755, exist_ok=True)
            lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                for report in reports:
                    self.append(path, mode, line(report))
            finally:
                os.close(lock)
        except OSError as e:
            raise SinkError(f"{path}: {e.strerror or e}") from None

    def append(self, path: str, mode: int, data: bytes) -> None:
        fd = open_append(path, mode)
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size and \
                    st.st_size + len(data) > self.settings["max_bytes"]:
                os.close(fd)
                fd = -1
                rotate(path, self.settings["keep"])
                fd = open_append(path, mode)
            written = os.write(fd, data)
            if written != len(data):  # only when the disk is full; cut the partial line off
                if stat.S_ISREG(st.st_mode):
                    os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise OSError(28, "short write (disk full?)")
        finally:
            if fd >= 0:
                os.close(fd)


def open_append(path: str, mode: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != mode:
        os.fchmod(fd, mode)  # the umask or an older file must not widen access
    return fd


def rotate(path: str, keep: int) -> None:
    if keep == 0:
        os.unlink(path)
        return
    for i in range(keep - 1, 0, -1):
        if os.path.exists(f"{path}.{i}"):
            os.replace(f"{path}.{i}", f"{path}.{i + 1}")
    os.replace(path, f"{path}.1")
