"""From an AddressSpace and what is known of its threads to report parts:
shared by every way of producing a report (attach, run, watch, core)."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from unwinder.dynamic import registered
from unwinder.modules import ImageCache, Module, ModuleMap
from unwinder.walk import unwind

from . import report
from .pyframes import add_python_frames
from .targets import procfs

MAX_PERF_MAP = 16 << 20


@dataclass
class ThreadInfo:
    tid: int
    name: str | None
    state: str | None          # the /proc state letter before the collector touched it
    error: str | None = None


def unwind_threads(space, infos: list[ThreadInfo], max_frames: int,
                   cache: ImageCache | None = None) -> tuple[list[dict], list[Module], list[str]]:
    """(thread dicts in the order of `infos`, every module, errors)."""
    modules = ModuleMap(space, cache)
    dynamic = registered(space, modules, *_perf_map(getattr(space, "pid", None)))
    known = set(space.threads())
    threads = []
    for info in infos:
        regs = space.registers(info.tid) if info.tid in known else None
        trace = unwind(space, modules, regs, max_frames, dynamic) if regs else None
        threads.append(report.thread_dict(info, regs, trace))
    python_errors = add_python_frames(space, modules, threads)
    loaded = modules.load_all() + dynamic.modules
    errors = [e for m in loaded if m.image is not None for e in m.image.errors]
    return threads, loaded, errors + dynamic.errors + python_errors


def _perf_map(pid: int | None) -> tuple[str | None, str]:
    """The text of the process's /tmp/perf-PID.map (PID as the process
    itself sees it, in its own root), or None. Not followed if a symlink."""
    if pid is None:
        return None, ""
    nspid = (procfs.status_field(pid, "NSpid") or str(pid)).split()[-1]
    name = f"/tmp/perf-{nspid}.map"
    try:
        fd = os.open(f"/proc/{pid}/root{name}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None, name
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None, name
        return f.read(MAX_PERF_MAP).decode("utf-8", "replace"), name
