"""`collector attach`'s work, done by the command or by the service: stop,
copy, release, then unwind the copy."""
from __future__ import annotations

import time

from . import report
from .targets import live


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


def build(taken: Taken, max_frames: int | None, images) -> dict:
    """The report of a capture, unwound with `images` (an ImageCache)."""
    from .collect import from_capture  # the engine and the rest: once released
    rep = from_capture("attach", taken.process, taken.cap, taken.t0, max_frames, images)
    rep["timings"]["stop_mode"] = "process" if taken.freeze else "thread"
    return rep
