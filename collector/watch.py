"""`collector watch PID`: trace a running process until it is about to die of
a fatal signal, report it, and let it die. Ctrl-C (or SIGTERM, SIGHUP,
SIGQUIT) to the collector detaches from every thread and leaves the process
as it was: running, or stopped if it was stopped."""
from __future__ import annotations

import sys

from .run import crash_report, describe
from .targets import live, tracer


def watch(pid: int, max_frames: int, stack_window: int, timeout: float) -> dict | None:
    live.check_target(pid)
    reports: list[dict] = []
    with tracer.signals_blocked():
        t = tracer.Tracer(pid, lambda crash: reports.append(
            crash_report("watch", crash, max_frames)), stack_window, timeout)
        try:
            t.seize_all()
            print(f"collector: watching pid {pid}", file=sys.stderr, flush=True)
            t.follow(lambda info: True)
        finally:
            t.detach_all()
    if reports:
        reports[0]["timings"]["stopped_ms"] = round(t.stopped_ms, 3)
        return reports[0]
    if t.status is not None:
        print(f"collector: pid {pid} {describe(t.status)}; no crash to report", file=sys.stderr)
    else:
        print(f"collector: detached from pid {pid}", file=sys.stderr)
    return None


def register(sub) -> None:
    from .cli import add_stop_options, add_unwind_options, command_parser, positive
    w = command_parser(sub, "watch", help="wait for a running process to crash, and report it",
                       description="Trace every thread of PID. If a fatal signal is about to "
                       "kill it, report every thread's backtrace, then let the signal proceed. "
                       "Ctrl-C detaches and leaves the process as it was.")
    w.add_argument("pid", type=positive, help="the process id")
    add_unwind_options(w)
    add_stop_options(w)
    w.set_defaults(run=lambda args: watch(args.pid, args.max_frames, args.stack_window,
                                          args.stop_timeout))
