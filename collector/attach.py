"""`collector attach PID`: stop, copy, release, then unwind the copy."""
from __future__ import annotations

import time

from unwinder.modules import ImageCache

from . import report
from .collect import unwind_threads
from .targets import live


def attach(pid: int, max_frames: int, stack_window: int, timeout: float,
           freeze: bool = False, cache: ImageCache | None = None) -> dict:
    t0 = time.monotonic()
    live.check_target(pid)
    process = report.process_info(pid)
    cap = live.capture(pid, stack_window=stack_window, timeout=timeout, freeze=freeze)
    rep = build_report("attach", process, cap, t0, max_frames, cache)
    rep["timings"]["stop_mode"] = "process" if freeze else "thread"
    return rep


def build_report(source: str, process: dict, cap: live.Capture, t0: float, max_frames: int,
                 cache: ImageCache | None = None, released: bool = True) -> dict:
    """Unwind a capture into a report. `released`: the target ran again after
    the copy, so reads outside it are late (run and watch unwind while the
    dying process is still held: their reads are exact)."""
    t1 = time.monotonic()
    space = cap.snapshot
    threads, modules, errors = unwind_threads(space, cap.threads, max_frames, cache)
    unwind_ms = (time.monotonic() - t1) * 1000
    errors = cap.errors + errors
    if space.late_reads and released:
        errors.append(f"{space.late_reads} reads fell outside the stack copies and were "
                      "served from the running process after it was released "
                      "(raise --stack-window to copy more)")
    space.close()
    snapshot = {"bytes_copied": space.bytes_copied, "late_reads": space.late_reads,
                "missing_reads": space.missing_reads}
    timings = {"stopped_ms": round(cap.stopped_ms, 3), "unwind_ms": round(unwind_ms, 3),
               "total_ms": round((time.monotonic() - t0) * 1000, 3)}
    return report.build(source, process, threads, modules, cap.stopped_at, timings,
                        errors, snapshot)


def register(sub) -> None:
    from .cli import add_stop_options, add_unwind_options, command_parser, positive
    a = command_parser(sub, "attach", help="backtrace every thread of a running process",
                       description="Stop the process briefly, copy its stacks, let it go, "
                       "and print a backtrace of every thread.")
    a.add_argument("pid", type=positive, help="the process id")
    add_unwind_options(a)
    add_stop_options(a)
    a.add_argument("--freeze", action="store_true",
                   help="hold all threads at once, for a snapshot consistent across "
                   "threads (default: one thread at a time, each held only while its "
                   "own stack is copied)")
    a.set_defaults(run=lambda args: attach(args.pid, args.max_frames, args.stack_window,
                                           args.stop_timeout, args.freeze))
