"""`collector attach PID`: stop, copy, release, then unwind the copy."""
from __future__ import annotations

import time

import psutil

from unwinder.modules import ImageCache, ModuleMap
from unwinder.walk import unwind

from . import report
from .errors import NoSuchProcess
from .targets import live


def attach(pid: int, max_frames: int, stack_window: int, timeout: float,
           cache: ImageCache | None = None) -> dict:
    t0 = time.monotonic()
    live.check_target(pid)
    try:
        process = report.process_info(pid)
    except psutil.NoSuchProcess:
        raise NoSuchProcess(f"no process with pid {pid}") from None
    cap = live.capture(pid, stack_window=stack_window, timeout=timeout)
    t1 = time.monotonic()
    space = cap.snapshot
    modules = ModuleMap(space, cache)
    threads = []
    errors = list(cap.errors)
    for info in cap.threads:
        regs = space.registers(info.tid) if info.tid in space.threads() else None
        trace = unwind(space, modules, regs, max_frames) if regs else None
        threads.append(report.thread_dict(info, regs, trace))
    loaded = modules.load_all()
    for m in loaded:
        if m.image is not None:
            errors += m.image.errors
    unwind_ms = (time.monotonic() - t1) * 1000
    snapshot = {"bytes_copied": space.bytes_copied, "late_reads": space.late_reads,
                "missing_reads": space.missing_reads}
    if space.late_reads:
        errors.append(f"{space.late_reads} reads fell outside the stack copies and were "
                      "served from the running process after it was released "
                      "(raise --stack-window to copy more)")
    space.close()
    timings = {"stopped_ms": round(cap.stopped_ms, 3), "unwind_ms": round(unwind_ms, 3),
               "total_ms": round((time.monotonic() - t0) * 1000, 3)}
    return report.build("attach", process, threads, loaded, cap.stopped_at, timings,
                        errors, snapshot)
