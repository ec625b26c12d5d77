"""`collector attach PID`: through the resident service when one runs (its
caches are warm), else in this process."""
from __future__ import annotations

from .. import errors
from ..service import control
from .options import add_stop_options, add_unwind_options, command_parser, positive

ANSWER_SLACK = 30.0  # seconds the service may take beyond stopping and symbolizing


def attach(args) -> dict:
    options = {"stack_window": args.stack_window, "stop_timeout": args.stop_timeout,
               "freeze": args.freeze, "max_frames": args.max_frames}
    from ..targets import live  # here: through the service, the client needs no more
    quick = args.stop_timeout <= control.MAX_STOP_TIMEOUT and \
        args.symbolize_budget <= control.MAX_BUDGET
    where = control.path() if quick and not args.no_service else None
    if where is not None:
        live.check_target(args.pid)  # what it cannot be asked, it is not asked
        try:
            rep = through(where, args.pid, options, args.symbolize_budget)
        except control.Unavailable:
            pass  # no service after all: done here
        else:
            args.outlet.budget = 0  # the service symbolized it with that budget
            return args.outlet.keep(rep)
    from ..attach import attach as take
    return args.outlet.keep(take(args.pid, images=args.outlet.images, **options))


def through(where: str, pid: int, options: dict, budget: float) -> dict:
    answer = control.ask(where, {"op": "attach", "pid": pid,
                                 "options": {**options, "symbolize_budget": budget}},
                         timeout=options["stop_timeout"] + budget + ANSWER_SLACK)
    if isinstance(answer.get("report"), dict):
        return answer["report"]
    kind = getattr(errors, str(answer.get("error")), None)
    if isinstance(kind, type) and issubclass(kind, errors.CollectorError):
        raise kind(f"{answer.get('message')} (said the service at {where})")
    raise control.Unavailable(f"{where}: not an answer: {str(answer)[:200]}")


def register(sub) -> None:
    a = command_parser(sub, "attach", help="backtrace every thread of a running process",
                       description="Stop the process briefly, copy its stacks, let it go, "
                       "and print a backtrace of every thread. When the resident service "
                       "runs (`collector serve`, control socket $COLLECTOR_CONTROL or "
                       f"{control.DEFAULT}), it does the work with its warm caches.")
    a.add_argument("pid", type=positive, help="the process id")
    add_unwind_options(a)
    add_stop_options(a)
    a.add_argument("--freeze", action="store_true",
                   help="hold all threads at once, for a snapshot consistent across "
                   "threads (default: one thread at a time, each held only while its "
                   "own stack is copied)")
    a.add_argument("--no-service", action="store_true",
                   help="do the work in this process even when the service runs")
    a.set_defaults(func=attach)
