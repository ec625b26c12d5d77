"""`collector attach PID`: stop, copy, release, then unwind the copy."""
from __future__ import annotations

import time

from .. import report
from ..targets import live
from .options import add_stop_options, add_unwind_options, command_parser, positive


def attach(args) -> dict:
    t0 = time.monotonic()
    live.check_target(args.pid)
    process = report.process_info(args.pid)
    cap = live.capture(args.pid, stack_window=args.stack_window, timeout=args.stop_timeout,
                       freeze=args.freeze)
    from ..collect import from_capture  # the engine and the rest: once released
    rep = args.outlet.keep(from_capture("attach", process, cap, t0, args.max_frames,
                                        args.outlet.images))
    rep["timings"]["stop_mode"] = "process" if args.freeze else "thread"
    return rep


def register(sub) -> None:
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
    a.set_defaults(func=attach)
