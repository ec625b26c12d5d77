"""`collector core FILE`'s work, done by the command or by the service
(with the descriptor its client opened): the core read into a report."""
from __future__ import annotations

import os
import stat
import time

from .errors import BadCore, UsageError
from .service.control import OPEN_FLAGS  # as a client of the service opens the file it hands over


def named(args) -> str:
    if len(args.file_or_specs) != 1:
        raise UsageError("give one core file (or --from-kernel with core_pattern specifiers)")
    return args.file_or_specs[0]


def open_core_file(path: str) -> int:
    """The core file open for reading (O_NONBLOCK: a FIFO must not hang the
    open; it is refused next, as anything but a regular file is)."""
    try:
        return os.open(path, OPEN_FLAGS)
    except OSError as e:
        raise cannot_open(path, e.strerror) from None


def cannot_open(path: str, why: str) -> BadCore:
    return BadCore(f"{path}: cannot open {path}: {why}")


def from_file(fd: int, path: str, args, images) -> dict:
    """The report of the core file `path`, open at `fd` (its own from here):
    in this process, or in the service's child that became the client, with
    the descriptor the client opened."""
    from unwinder.debuginfo import DEBUG_DIRS_ENV, debug_dirs

    from .targets.locate import Where
    if args.debug_dir:  # debug files are looked for there too, as symbolization does
        os.environ[DEBUG_DIRS_ENV] = ":".join([*args.debug_dir, *debug_dirs()])
    budget = args.symbolize_budget
    fetcher = None
    if budget > 0:  # with no budget, no debuginfod client is even imported
        from .debuginfod import Debuginfod
        fetcher = Debuginfod.from_env(time.monotonic() + budget)
    where = Where(exe=args.exe, sysroot=args.sysroot,
                  core_dir=os.path.dirname(os.path.abspath(path)),
                  fetch=fetcher.executable if fetcher else None)
    report = read_core(fd, path, args.max_frames, images, where)
    if fetcher is not None:
        report["errors"] += [e for e in fetcher.errors if e not in report["errors"]]
    return report


def read_core(fd: int, path: str, max_frames: int, cache, where) -> dict:
    """A core file, plain or compressed as systemd-coredump keeps them; its
    mapped files are looked for as `where` says."""
    from .collect import core_process, core_report, signal_dict
    from .perfmap import for_core, read
    from .targets import compressed
    from .targets.corefile import open_core
    from .targets.corehead import CoreError
    t0 = time.monotonic()
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise cannot_open(path, "not a regular file")
        packed = compressed.kind(fd)
    except BaseException:
        os.close(fd)
        raise
    core_info = {"path": os.path.abspath(path)}
    if packed:
        from .targets.stream import stream
        feed = compressed.Decompressing(fd, packed)
        try:
            got = stream(feed.fd, idle_timeout=60, where=where)
        finally:
            feed.close()
        space, layout, errors = got.space, got.layout, feed.errors + got.errors
        if layout is None:
            raise BadCore(f"{path}: {packed}-compressed: {'; '.join(errors)}")
        core_info.update(compression=packed, compressed_bytes=st.st_size, bytes=got.bytes_read,
                         kept_bytes=got.bytes_kept, expected_bytes=layout.size)
    else:
        try:
            space, size = open_core(fd, where)
        except CoreError as e:
            raise BadCore(f"{path}: {e}") from None
        layout, errors = space.layout, list(space.layout.errors)
        core_info.update(bytes=size, expected_bytes=layout.size)
    timings = {"stopped_ms": 0.0, "read_ms": round((time.monotonic() - t0) * 1000, 3)}
    out = core_report(space, core_process(layout, None), errors, max_frames, st.st_mtime,
                      timings, core_info, signal_dict(layout.notes.siginfo, None), cache=cache,
                      perf=for_core(layout, read, st.st_mtime, None))
    out["timings"]["total_ms"] = round((time.monotonic() - t0) * 1000, 3)
    return out
