"""`collector attach`'s work, done by the command or by the service: stop,
copy, release, then unwind the copy."""
from __future__ import annotations

import time

from . import report
from .targets import DEFAULT_STACK_WINDOW, DEFAULT_STOP_TIMEOUT, live

# the only options of the quick form (commands/attach.py declares them): flags
QUICK_FLAGS = ("--freeze", "--no-service")


class Taken:
    """What a capture took, with the metadata read before it."""

    def __init__(self, t0: float, process: dict, cap, freeze: bool):
        self.t0, self.process, self.cap, self.freeze = t0, process, cap, freeze


def capture(pid: int, stack_window: int, stop_timeout: float, freeze: bool) -> Taken:
    """Stop, copy, release: nothing of the engine is imported yet."""
    t0 = time.monotonic()
    process = report.process_info(pid)  # then live.capture refuses what it must not trace
    return Taken(t0, process, live.capture(pid, stack_window=stack_window,
                                           timeout=stop_timeout, freeze=freeze), freeze)


def quick(words: list[str]):
    """`attach PID` (`words`: those after `attach`) with no option but
    QUICK_FLAGS: captured before its command line is even parsed (argparse
    and what comes with it cost more than stopping the first thread), with
    the defaults the parser would give. Returns the command's first step (cli.run runs it, to set
    args.taken or to raise what the capture raised); None for any other
    command line, which is parsed before anything is stopped."""
    flags = [w for w in words if w.startswith("-")]
    pids = [w for w in words if not w.startswith("-")]
    if not set(flags) <= set(QUICK_FLAGS) or len(pids) != 1 or \
            not (pids[0].isascii() and pids[0].isdigit()) or int(pids[0]) <= 0:
        return None
    try:
        taken, error = capture(int(pids[0]), DEFAULT_STACK_WINDOW, DEFAULT_STOP_TIMEOUT,
                               "--freeze" in flags), None
    except Exception as e:  # said by cli.run, as a parsed command's would be
        taken, error = None, e

    def first(args) -> None:
        if error is not None:
            raise error
        args.taken = taken
    return first


def build(taken: Taken, max_frames: int | None, images) -> dict:
    """The report of a capture, unwound with `images` (an ImageCache)."""
    from .collect import from_capture  # the engine and the rest: once released
    rep = from_capture("attach", taken.process, taken.cap, taken.t0, max_frames, images)
    rep["timings"]["stop_mode"] = "process" if taken.freeze else "thread"
    return rep
