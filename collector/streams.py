"""The process's standard streams, at both ends of a run, with nothing
imported that a core_pattern handler could not afford before its first
decision (service/pipe.py)."""
from __future__ import annotations

import os
import sys


def std_streams() -> None:
    """The kernel starts a core_pattern handler with fds 1 and 2 closed:
    put /dev/null there before any file we open can take them, so that a
    print or a log line neither fails nor lands in a report file."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, "w", closefd=False))


def leave(code: int) -> None:
    """Out without the interpreter's teardown (freeing every module and
    object: a seventh of a short run), once what main() left in stdout and
    stderr is written. Exit status 120 if that fails, as the interpreter's
    own exit would say."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)
