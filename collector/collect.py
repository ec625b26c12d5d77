"""From an AddressSpace and what is known of its threads to report parts:
shared by every way of producing a report (attach, run, watch, core)."""
from __future__ import annotations

from dataclasses import dataclass

from unwinder.modules import ImageCache, Module, ModuleMap
from unwinder.walk import unwind

from . import report


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
    known = set(space.threads())
    threads = []
    for info in infos:
        regs = space.registers(info.tid) if info.tid in known else None
        trace = unwind(space, modules, regs, max_frames) if regs else None
        threads.append(report.thread_dict(info, regs, trace))
    loaded = modules.load_all()
    errors = [e for m in loaded if m.image is not None for e in m.image.errors]
    return threads, loaded, errors
