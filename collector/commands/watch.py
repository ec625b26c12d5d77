"""`collector watch PID`: trace a running process until it is about to die of
a fatal signal, report it, and let it die. Ctrl-C (or SIGTERM, SIGHUP,
SIGQUIT) to the collector detaches from every thread and leaves the process
as it was: running, or stopped if it was stopped."""
from __future__ import annotations

import sys

from ..collect import crash_report
from ..targets import live, tracer
from .options import add_stop_options, add_unwind_options, command_parser, positive


def watch(args) -> dict | None:
    pid = args.pid
    live.check_target(pid)
    def on_crash(crash):
        args.outlet.keep(crash_report("watch", crash, args.max_frames, args.outlet.images))

    with tracer.signals_blocked():
        t = tracer.Tracer(pid, on_crash, args.stack_window, args.stop_timeout)
        try:
            t.seize_all()
            print(f"collector: watching pid {pid}", file=sys.stderr, flush=True)
            t.follow(lambda info: True)
        finally:
            t.finish()
    tracer.say_unreleased(t)
    report = args.outlet.kept
    if report:
        report["timings"]["stopped_ms"] = round(t.stopped_ms, 3)
        return report
    if t.status is not None:
        print(f"collector: pid {pid} {tracer.describe(t.status)}; no crash to report",
              file=sys.stderr)
    else:
        print(f"collector: detached from pid {pid}", file=sys.stderr)
    return None


def register(sub) -> None:
    w = command_parser(sub, "watch", help="wait for a running process to crash, and report it",
                       description="Trace every thread of PID. If a fatal signal is about to "
                       "kill it, report every thread's backtrace, then let the signal proceed. "
                       "Ctrl-C detaches and leaves the process as it was.")
    w.add_argument("pid", type=positive, help="the process id")
    add_unwind_options(w)
    add_stop_options(w)
    w.set_defaults(func=watch)
