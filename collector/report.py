"""The report: a plain dict that validates against schema/report-v1.json."""
from __future__ import annotations

import datetime
import os
import uuid

import psutil

from unwinder.modules import Module
from unwinder.regs import by_name
from unwinder.walk import Trace

from . import __version__
from .errors import NoSuchProcess
from .targets import procfs

SCHEMA_VERSION = 1


def process_info(pid: int) -> dict:
    """Metadata via psutil, taken before the process is touched (its state
    is the state it was found in). Fields psutil cannot read are null."""
    try:
        p = psutil.Process(pid)
    except psutil.NoSuchProcess:
        raise NoSuchProcess(f"no process with pid {pid}") from None
    with p.oneshot():
        info = {"pid": pid}
        for key, getter in (("ppid", p.ppid), ("exe", p.exe), ("name", p.name),
                            ("cmdline", p.cmdline), ("cwd", p.cwd), ("state", p.status)):
            try:
                info[key] = getter()
            except (psutil.Error, OSError):
                info[key] = None
        try:
            info["uid"], info["gid"] = p.uids().real, p.gids().real
        except (psutil.Error, OSError):
            info["uid"] = info["gid"] = None
        try:  # kept only as far as the redaction policy allows, on delivery
            info["environ"] = p.environ()
        except (psutil.Error, OSError):
            pass
    info["cmdline"] = info["cmdline"] or []
    info["exe"] = info["exe"] or None
    info.update(procfs.cgroup(pid))
    return info


def frame_dict(frame) -> dict:
    module = frame.module
    rel_pc = module.link(frame.pc) if module else None
    function = offset = None
    if module is not None and module.image is not None and rel_pc is not None:
        at = frame.symbol_pc
        found = module.image.symbols.lookup(module.link(at))
        if found:
            function, offset = found[0], found[1] + (frame.pc - at)
    out = {
        "index": frame.index, "pc": frame.pc, "sp": frame.sp, "cfa": frame.cfa,
        "module": module.path if module else None,
        "build_id": module.build_id if module else None,
        "rel_pc": rel_pc, "function": function, "offset": offset,
        "method": frame.method,
    }
    if frame.signal_frame:
        out["signal_frame"] = True
    return out


def thread_dict(info, regs: dict[int, int] | None, trace: Trace | None) -> dict:
    frames = [frame_dict(f) for f in trace.frames] if trace else []
    for position, f in enumerate(frames):
        f["index"] = position
    out = {"tid": info.tid, "name": info.name, "state": info.state,
           "registers": by_name(regs or {}), "frames": frames,
           "stop_reason": trace.stop_reason if trace else (info.error or "not stopped")}
    if trace:
        methods: dict[str, int] = {}
        for f in trace.frames:
            methods[f.method] = methods.get(f.method, 0) + 1
        for method, n in (trace.elided.methods.items() if trace.elided else ()):
            methods[method] = methods.get(method, 0) + n     # the frames left out too
        out["methods"] = methods
    if trace and trace.elided:
        out["elided"] = elided_dict(trace.elided)
        frames[trace.gap]["elided_before"] = trace.elided.count
    if info.error:
        out["error"] = info.error
    return out


def elided_dict(elided) -> dict:
    """The frames a very deep walk left out: how many, and the cycle they
    repeat (its frames named as frame_dict names them)."""
    keys = ("pc", "module", "build_id", "rel_pc", "function", "offset")
    cycle = [{k: d[k] for k in keys} for d in map(frame_dict, elided.cycle)]
    return {"frames": elided.count, "cycle": cycle, "repeats": elided.repeats,
            "cycle_frames": elided.run}


def module_dict(module: Module) -> dict:
    out = {"path": module.path, "build_id": module.build_id, "start": module.start,
           "end": module.end, "load_bias": module.bias if module.bias is not None else 0}
    elf = getattr(module.image, "elf", None)  # run-time modules have no file
    package = elf.package() if elf is not None else None
    if package:
        out["package"] = package
    if module.found_by:
        out["found_by"] = module.found_by
    if module.error:
        out["error"] = module.error
    return out


def build(source: str, process: dict, threads: list[dict], modules: list[Module],
          stopped_at: float, timings: dict, errors: list[str], snapshot: dict) -> dict:
    uname = os.uname()
    return {
        "schema_version": SCHEMA_VERSION,
        "report_id": str(uuid.uuid4()),
        "collector": {"version": __version__},
        "time": datetime.datetime.fromtimestamp(stopped_at, datetime.timezone.utc)
                .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "host": {"hostname": uname.nodename, "kernel": uname.release, "machine": uname.machine},
        "source": source,
        "process": process,
        "threads": threads,
        "modules": [module_dict(m) for m in modules],
        "snapshot": snapshot,
        "timings": timings,
        "errors": errors,
    }
