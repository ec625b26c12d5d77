"""`collector run [--] PROG ARGS...`: run a program as a tracee and report
the fatal signal it dies of, if it dies of one. The collector exits as the
program did: its exit code, or 128 + the number of the signal that killed it.
A signal to the collector (SIGINT, SIGTERM, SIGHUP, SIGQUIT) is passed on to
the program and releases it; if it has not ended GRACE seconds later it is
left running, untraced, and the collector exits 128 + that signal.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..collect import crash_report
from ..errors import CannotRun, UsageError
from ..targets import tracer
from .options import add_stop_options, add_unwind_options, command_parser


def run(args) -> dict | None:
    """The report or None; sets the exit status to mirror."""
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise UsageError("collector run: which program? (collector run [--] PROG ARGS...)")
    signalled: list[int] = []

    def on_crash(crash):
        args.outlet.keep(crash_report("run", crash, args.max_frames, args.outlet.images))

    def on_signal(info) -> bool:
        tracer.forward(t.pid, info)
        signalled.append(info.si_signo)
        return True

    with tracer.signals_blocked() as mask:
        t, untraced, failed = tracer.start(argv, mask, on_crash, args.stack_window,
                                          args.stop_timeout)
        if untraced:  # the program runs all the same, without a report
            print(f"collector: cannot trace {argv[0]}: {untraced}", file=sys.stderr)
        try:
            t.follow(on_signal)
        finally:
            t.finish()
            error = tracer.exec_error(failed)
    if error:
        raise CannotRun(f"cannot run {argv[0]}: {error}")
    report = args.outlet.kept
    if report:
        report["timings"]["stopped_ms"] = round(t.stopped_ms, 3)
    tracer.say_unreleased(t)
    if t.status is None:
        print(f"collector: left {argv[0]} (pid {t.pid}) to itself, untraced", file=sys.stderr)
        args.exit_status = 128 + signalled[-1] if signalled else 1
    else:
        print(f"collector: {argv[0]} {tracer.describe(t.status)}", file=sys.stderr)
        code = os.waitstatus_to_exitcode(t.status)
        args.exit_status = code if code >= 0 else 128 - code
    return report


def register(sub) -> None:
    r = command_parser(sub, "run", help="run a program and report the crash it dies of",
                       description="Start PROG as a tracee. If a fatal signal (SEGV, BUS, ILL, "
                       "FPE, ABRT, TRAP, SYS) is about to kill it, report every thread's "
                       "backtrace, then let the signal proceed. Exits as PROG did "
                       "(128+N if it was killed by signal N).")
    r.add_argument("argv", nargs=argparse.REMAINDER, metavar="PROG [ARGS...]")
    add_unwind_options(r)
    add_stop_options(r)
    r.set_defaults(func=run)
