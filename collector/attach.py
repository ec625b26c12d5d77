"""`collector attach`'s work, done by the command or by the service: stop,
copy, release, then unwind the copy."""
from __future__ import annotations

import time

from . import report
from .targets import live


def attach(pid: int, stack_window: int, stop_timeout: float, freeze: bool,
           max_frames: int | None, outlet) -> dict:
    """`outlet`'s image cache is asked for only once the target is released:
    building it imports the engine."""
    t0 = time.monotonic()
    live.check_target(pid)
    process = report.process_info(pid)
    cap = live.capture(pid, stack_window=stack_window, timeout=stop_timeout, freeze=freeze)
    from .collect import from_capture  # the engine and the rest: once released
    rep = from_capture("attach", process, cap, t0, max_frames, outlet.images)
    rep["timings"]["stop_mode"] = "process" if freeze else "thread"
    return rep
