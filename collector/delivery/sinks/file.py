"""JSON lines appended to a file: one write(2) per report on an O_APPEND
descriptor under an flock of the directory held by every writer (so a report of any size
never interleaves with another, and rotation never races a write),
rotated by size to PATH.1 .. PATH.keep, never world-readable.

The file is opened as what it should be: a regular file of root's or ours
with no other hard link, never through a symlink (O_NOFOLLOW), in a real
directory that no other user may write (its group may: a shared log
directory), so that a name planted there cannot make the collector append
to, or chmod, a file it was not meant to."""
from __future__ import annotations

import errno
import fcntl
import os
import stat

from ...files import own_dir
from . import Sink, SinkError, line


class FileSink(Sink):
    def send(self, reports: list[dict]) -> None:
        path, mode = self.settings["path"], self.settings["mode"]
        try:
            directory = own_dir(os.path.dirname(os.path.abspath(path)), 0o755, group=True)
            lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
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
            size = os.fstat(fd).st_size
            if size and size + len(data) > self.settings["max_bytes"]:
                os.close(fd)
                fd = -1
                rotate(path, self.settings["keep"])
                fd = open_append(path, mode)
            written = os.write(fd, data)
            if written != len(data):  # only when the disk is full; cut the partial line off
                os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise OSError(errno.ENOSPC, "short write (disk full?)")
        finally:
            if fd >= 0:
                os.close(fd)


def open_append(path: str, mode: int) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, "a symbolic link: refused (the sink writes a file, "
                          "never through a link)") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file: refused")
        if st.st_nlink != 1:
            raise OSError(errno.EMLINK, f"has {st.st_nlink} hard links: refused")
        if st.st_uid not in (0, os.geteuid()):
            raise OSError(errno.EPERM, f"belongs to uid {st.st_uid}: refused")
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)  # the umask or an older file must not widen access
    except BaseException:
        os.close(fd)
        raise
    return fd


def rotate(path: str, keep: int) -> None:
    if keep == 0:
        os.unlink(path)
        return
    for i in range(keep - 1, 0, -1):
        if os.path.lexists(f"{path}.{i}"):
            os.replace(f"{path}.{i}", f"{path}.{i + 1}")
    os.replace(path, f"{path}.1")
