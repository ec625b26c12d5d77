"""Opening files a target names (mapped files, a core's file list, debug
files): only regular files, opened without blocking, so that a FIFO, a
device or a directory where a file should be is refused, never read and
never waited on."""
from __future__ import annotations

import errno
import os
import stat


def open_regular(path: str, dir_fd: int | None = None, follow: bool = True) -> int:
    """An fd reading `path`, which must be a regular file (OSError if not)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, limit: int, dir_fd: int | None = None,
                 follow: bool = True) -> tuple[bytes, float] | None:
    """(at most `limit` bytes, mtime) of a regular file, or None."""
    try:
        fd = open_regular(path, dir_fd=dir_fd, follow=follow)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read(limit), os.fstat(f.fileno()).st_mtime
        except OSError:
            return None
