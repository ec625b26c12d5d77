"""The report: a plain dict that validates against schema/report-v1.json."""
from __future__ import annotations

import os

from unwinder.regs import by_name

from . import __version__
from .errors import NoSuchProcess
from .targets import procfs

TYPE_CHECKING = False  # not typing's (an import before the capture); type checkers know the name
if TYPE_CHECKING:  # the engine is imported once the target is released
    from unwinder.modules import Module
    from unwinder.walk import Trace

SCHEMA_VERSION = 1


def process_info(pid: int) -> dict:
    """Metadata from /proc, taken before the process is touched (its state
    is the state it was found in), with the values psutil used to give.
    Fields that cannot be read are null."""
    try:
        fields = procfs.stat_fields(pid)
    except (OSError, ValueError):
        raise NoSuchProcess(f"no process with pid {pid}") from None
    args = procfs.cmdline(pid)
    status = procfs.status(pid)
    info = {"pid": pid, "ppid": int(fields[1]),
            "exe": procfs.link(pid, "exe") or _exe_from(args), "name": _name(pid, args),
            "cmdline": args or [], "cwd": procfs.link(pid, "cwd"),
            "state": procfs.STATE_WORDS.get(fields[0], "?"),
            "uid": _real_id(status, "Uid"), "gid": _real_id(status, "Gid")}
    environ = procfs.environ(pid)  # kept only as far as the redaction policy allows
    if environ is not None:
        info["environ"] = environ
    info.update(procfs.cgroup(pid))
    return info


def _name(pid: int, args: list[str] | None) -> str | None:
    """The command name, or the program's file name where the kernel cut
    the name to 15 bytes and that name begins it."""
    name = procfs.stat_name(pid)
    if name is not None and len(name) >= 15 and args:
        full = os.path.basename(args[0])
        if full.startswith(name):
            return full
    return name


def _exe_from(args: list[str] | None) -> str | None:
    """The executable when /proc/PID/exe cannot be read: an absolute
    argv[0] that is an executable file."""
    exe = args[0] if args else ""
    if os.path.isabs(exe) and os.path.isfile(exe) and os.access(exe, os.X_OK):
        return exe
    return None


def _real_id(status: dict[str, str], key: str) -> int | None:
    try:
        return int(status[key].split()[0])
    except (KeyError, ValueError, IndexError):
        return None


def frame_dict(frame, named: dict | None = None, index: int | None = None) -> dict:
    """`named`: what frames with the same pc, module and lookup address were
    named (deep recursion repeats a few frames thousands of times); `index`:
    the frame's place in the report (default: in the walk)."""
    module, pc = frame.module, frame.pc
    # what symbol_pc depends on besides pc: the lookup address is found only once
    key = (pc, module, frame.index == 0, frame.after_signal, frame.signal_frame)
    static = named.get(key) if named is not None else None
    if static is None:
        static = _name_frame(module, pc, frame.symbol_pc)
        if named is not None:
            named[key] = static
    path, build_id, rel_pc, function, offset = static
    out = {
        "index": frame.index if index is None else index, "pc": pc, "sp": frame.sp,
        "cfa": frame.cfa, "module": path, "build_id": build_id, "rel_pc": rel_pc,
        "function": function, "offset": offset, "method": frame.method,
    }
    if frame.signal_frame:
        out["signal_frame"] = True
    return out


def _name_frame(module, pc: int, at: int) -> tuple:
    """(module path, build-id, rel_pc, function, offset) of a frame."""
    if module is None:
        return None, None, None, None, None
    rel_pc = module.link(pc)
    function = offset = None
    if module.image is not None and rel_pc is not None:
        found = module.image.symbols.lookup(module.link(at))
        if found:
            function, offset = found[0], found[1] + (pc - at)
    return module.path, module.build_id, rel_pc, function, offset


def thread_dict(info, regs: dict[int, int] | None, trace: Trace | None,
                named: dict | None = None) -> dict:
    """`named`: frame_dict's names, shared by the threads of one report."""
    named = {} if named is None else named
    frames, methods = [], {}
    for position, f in enumerate(trace.frames if trace else ()):
        frames.append(frame_dict(f, named, position))
        methods[f.method] = methods.get(f.method, 0) + 1
    out = {"tid": info.tid, "name": info.name, "state": info.state,
           "registers": by_name(regs or {}), "frames": frames,
           "stop_reason": trace.stop_reason if trace else (info.error or "not stopped")}
    if trace:
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


def random_uuid() -> str:
    """A random (version 4, RFC 4122 variant) UUID, as uuid.uuid4 makes one:
    the uuid module imports platform, 1.5 ms of a cold report."""
    b = bytearray(os.urandom(16))
    b[6] = b[6] & 0x0F | 0x40
    b[8] = b[8] & 0x3F | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build(source: str, process: dict, threads: list[dict], modules: list[Module],
          stopped_at: float, timings: dict, errors: list[str], snapshot: dict) -> dict:
    from .delivery.storm import iso  # here, not before the capture (process_info)
    uname = os.uname()
    return {
        "schema_version": SCHEMA_VERSION,
        "report_id": random_uuid(),
        "collector": {"version": __version__},
        "time": iso(stopped_at),
        "host": {"hostname": uname.nodename, "kernel": uname.release, "machine": uname.machine},
        "source": source,
        "process": process,
        "threads": threads,
        "modules": [module_dict(m) for m in modules],
        "snapshot": snapshot,
        "timings": timings,
        "errors": errors,
    }
