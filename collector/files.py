"""Files the collector writes: into a directory that is ours (a real
directory, not a symlink, not writable by others), under a temporary name
created with O_EXCL|O_NOFOLLOW (never predictable), renamed into place; the
temporary file is removed on every failure, a full disk included. (Files
read on a target's behalf: unwinder/files.py.)
"""
from __future__ import annotations

import os
import stat
from _collections_abc import Iterable  # collections.abc imports collections: ~2 ms


class UnsafeDirectory(OSError):
    pass


def own_dir(path: str, mode: int = 0o700, group: bool = False) -> str:
    """Make `path` if missing; refuse one that is a symlink, not a directory,
    owned by a user other than root or us, or writable by others (unless
    sticky, as /tmp). `group`: a shared log directory may be writable by its
    group (Debian's /var/log is root:adm 0775 or root:syslog 0775)."""
    os.makedirs(path, mode=mode, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeDirectory(f"{path} is a symbolic link: give the directory it points to")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory")
    if st.st_uid not in (0, os.geteuid()):
        raise UnsafeDirectory(f"{path} belongs to uid {st.st_uid}, neither root nor us")
    if st.st_mode & (0o002 if group else 0o022) and not st.st_mode & stat.S_ISVTX:
        raise UnsafeDirectory(f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                              "make it 0755 or 0700, or sticky as /tmp")
    return path


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """All of `data`, however many writes it takes (a pipe, a socket)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: str, data: bytes | Iterable[bytes], mode: int = 0o600,
                 fsync: bool = False) -> None:
    """Replace `path` whole, or leave it as it was (OSError)."""
    # a new name of our own, as tempfile.mkstemp makes one (importing it
    # costs ~5 ms: more than a crash storm's early decision may take)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-{os.urandom(8).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, mode)
        for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
            write_all(fd, chunk)
        if fsync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
