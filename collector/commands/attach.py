"""`collector attach PID` in this process. When the resident service runs,
`python -m collector` hands it the command line first (control.forward):
its caches are warm."""
from __future__ import annotations

from ..service import CONTROL, CONTROL_ENV
from .options import add_stop_options, add_unwind_options, command_parser, positive


def capture(args) -> None:
    """The command's first step, before the configuration is read: the
    first thread is stopped as soon after exec as can be."""
    from ..attach import capture as take
    args.taken = take(args.pid, stack_window=args.stack_window,
                      stop_timeout=args.stop_timeout, freeze=args.freeze)


def attach(args) -> dict:
    """In this process: the service, when one runs, was asked first
    (control.forward, before this command line was even parsed)."""
    from ..attach import build
    return args.outlet.keep(build(args.taken, args.max_frames, args.outlet.images))


def register(sub) -> None:
    a = command_parser(sub, "attach", help="backtrace every thread of a running process",
                       description="Stop the process briefly, copy its stacks, let it go, "
                       "and print a backtrace of every thread. When the resident service "
                       f"runs (`collector serve`, control socket ${CONTROL_ENV} or "
                       f"{CONTROL}), it does the work with its warm caches.")
    a.add_argument("pid", type=positive, help="the process id")
    add_unwind_options(a)
    add_stop_options(a)
    a.add_argument("--freeze", action="store_true",
                   help="hold all threads at once, for a snapshot consistent across "
                   "threads (default: one thread at a time, each held only while its "
                   "own stack is copied)")
    a.add_argument("--no-service", action="store_true",
                   help="do the work in this process even when the service runs")
    a.set_defaults(func=attach, first=capture)
