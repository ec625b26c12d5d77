"""From a target's state to a report: unwind every thread of an
AddressSpace and build the report dict. Shared by every way of producing a
report: a live process (attach), a traced one that crashes (run, watch),
a core file or the kernel's core stream (core, serve)."""
from __future__ import annotations

import gc
import signal
import time

from unwinder.dynamic import Registered, registered
from unwinder.modules import ImageCache, Module, ModuleMap
from unwinder.regs import RIP, RSP, known
from unwinder.walk import Frame, Trace, unwind

from . import perfmap, report
from .guard import stage
from .pyframes import add_python_frames
from .targets.procfs import ThreadInfo

TYPE_CHECKING = False  # not typing's; the core readers are imported where cores are read
if TYPE_CHECKING:
    from .targets.corefile import CoreSpace, Layout
    from .targets.crashed import Seen

FAULT_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGTRAP}


def unwind_threads(space, infos: list[ThreadInfo], max_frames: int,
                   cache: ImageCache | None = None, perf_map: tuple[str | None, str] | None = None
                   ) -> tuple[list[dict], list[Module], list[str]]:
    """(thread dicts in the order of `infos`, every module, errors). Each
    thread is a stage of its own: one that fails keeps its registers.
    `perf_map`: (text, name); by default the live process's."""
    # a walk makes a dict and a frame per step and keeps thousands of them:
    # the cyclic collector would sweep them again and again for nothing
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _unwind_threads(space, infos, max_frames, cache, perf_map)
    finally:
        if collecting:
            gc.enable()


def _unwind_threads(space, infos, max_frames, cache, perf_map):
    errors: list[str] = []
    known = set(space.threads())
    regs = {info.tid: space.registers(info.tid) if info.tid in known else None for info in infos}
    modules = stage(errors, "reading the mappings", ModuleMap, space, cache)
    if modules is None:
        return [raw_thread(info, regs[info.tid]) for info in infos], [], errors
    dynamic = stage(errors, "run-time unwind info", lambda: registered(
        space, modules, *(perf_map or perfmap.live(getattr(space, "pid", None)))),
        fallback=lambda: Registered([], [], []))
    named: dict = {}  # frames named, by pc: the threads share most of them
    threads = [stage(errors, f"unwinding thread {info.tid}", unwind_thread, space, modules,
                     dynamic, info, regs[info.tid], max_frames, named,
                     fallback=lambda: raw_thread(info, regs[info.tid]))
               for info in infos]
    errors += stage(errors, "reading Python frames", add_python_frames, space, modules, threads,
                    fallback=list)
    loaded = stage(errors, "loading the modules", lambda: modules.load_all() + dynamic.modules,
                   fallback=list)
    errors += [e for m in loaded if m.image is not None for e in m.image.errors]
    return threads, loaded, errors + dynamic.errors


def unwind_thread(space, modules: ModuleMap, dynamic: Registered, info: ThreadInfo,
                  regs: dict[int, int] | None, max_frames: int, named: dict | None = None) -> dict:
    trace = unwind(space, modules, regs, max_frames, dynamic) if regs else None
    return report.thread_dict(info, regs, trace, named)


def raw_thread(info: ThreadInfo, regs: dict[int, int] | None) -> dict:
    """A thread the unwinder failed on: its registers and the pc they hold."""
    frames = [Frame(0, regs[RIP], known(regs), "context")] if regs and RIP in regs and \
        RSP in regs else []
    return report.thread_dict(info, regs, Trace(frames, "unwinding failed (see errors)"))


def from_capture(source: str, process: dict, cap, t0: float, max_frames: int,
                 cache: ImageCache | None = None, released: bool = True) -> dict:
    """Unwind a live capture into a report. `released`: the target ran again
    after the copy, so reads outside it are late (run and watch unwind while
    the dying process is still held: their reads are exact)."""
    t1 = time.monotonic()
    space = cap.snapshot
    threads, modules, errors = unwind_threads(space, cap.threads, max_frames, cache)
    unwind_ms = (time.monotonic() - t1) * 1000
    errors = cap.errors + errors
    if space.late_reads and released:
        errors.append(f"{space.late_reads} reads fell outside the copies made while the "
                      "target was held (its stacks, the vdso) and were served from the "
                      "running process after it was released: what they found (interpreter "
                      "frames, frames past --stack-window) is as it was a moment later")
    space.close()
    snapshot = {"bytes_copied": space.bytes_copied, "late_reads": space.late_reads,
                "missing_reads": space.missing_reads}
    timings = {"stopped_ms": round(cap.stopped_ms, 3), "unwind_ms": round(unwind_ms, 3),
               "total_ms": round((time.monotonic() - t0) * 1000, 3)}
    return report.build(source, process, threads, modules, cap.stopped_at, timings,
                        errors, snapshot)


def crash_report(source: str, crash, max_frames: int, cache: ImageCache | None = None) -> dict:
    """The report of a traced process's crash, built while it is still held."""
    cap = crash.capture
    process = report.process_info(cap.snapshot.pid)
    # /proc says tracing-stop because we hold it; it was running into the fault
    process["state"] = "running"
    out = from_capture(source, process, cap, crash.t0, max_frames, cache, released=False)
    out["signal"] = signal_dict(crash.siginfo, crash.signal)
    for thread in out["threads"]:
        if thread["tid"] == crash.tid:
            thread["crashed"] = True
    return out


def signal_dict(siginfo: dict | None, fallback: int | None) -> dict | None:
    signo = siginfo["signo"] if siginfo else fallback
    if not signo:
        return None
    try:
        name = signal.Signals(signo).name
    except ValueError:
        name = None
    out = {"number": signo, "name": name}
    if siginfo:
        out["si_code"] = siginfo["code"]
        # si_addr means the faulting address only for a kernel-raised fault
        if signo in FAULT_SIGNALS and siginfo["code"] > 0:
            out["si_addr"] = siginfo["addr"]
    return out


def core_process(layout: Layout | None, pid: int | None) -> dict:
    """Process fields the core itself holds (NT_PRPSINFO; pr_psargs keeps
    only the first 80 bytes of the command line)."""
    ps = layout.notes.psinfo if layout else None
    out = {"pid": pid if pid is not None else (ps["pid"] if ps else 0), "exe": None,
           "cmdline": ps["args"].split() if ps else [], "uid": None, "gid": None,
           "state": None}
    if ps:
        out.update(ppid=ps["ppid"], name=ps["name"], uid=ps["uid"], gid=ps["gid"])
    if layout:
        entry = layout.notes.auxv.get(9)  # AT_ENTRY: the executable's entry point
        for start, (end, _, path) in layout.notes.files.items():
            if entry is not None and start <= entry < end:
                out["exe"] = path
    return out


def found_files(space: CoreSpace, modules: list[Module]) -> dict[int, str]:
    """Each module says how its file was found, or why none was. Returns
    module start -> the file used where it is not the recorded path."""
    elsewhere = {}
    for m in modules:
        first = m.mappings[0] if m.mappings else None
        if first is None or first.path == "[vdso]":
            continue
        m.found_by = space.found_by.get(first.start)
        why = space.located.why_not.get(space.layout.notes.files.get(first.start, (0, 0, ""))[2])
        if m.image is None and why:
            m.error = why
        used = space.file_for(first)
        if m.image is not None and m.found_by not in (None, "path", "map_files"):
            elsewhere[m.start] = used
    return elsewhere


def core_report(space: CoreSpace | None, process: dict, errors: list[str],
                 max_frames: int, stopped_at: float, timings: dict, core_info: dict,
                 sig: dict | None, tids: dict[int, tuple[int, str | None]] | None = None,
                 cache: ImageCache | None = None,
                 perf: tuple[str | None, str, str | None] = (None, "", None)) -> dict:
    """The report: threads in the order main, then by tid, the thread that
    dumped (the first NT_PRSTATUS) marked `crashed`. `tids` translates the
    core's thread ids (the process's pid namespace) to ours, with names."""
    tids = tids or {}
    threads, modules, elsewhere = [], [], {}
    t0 = time.monotonic()
    if space is not None:
        notes = space.layout.notes
        ps_pid = notes.psinfo["pid"] if notes.psinfo else None
        # the core names no thread; /proc does while the process exists
        infos = [ThreadInfo(tid, tids.get(tid, (tid, None))[1]
                            or (process.get("name") if tid == ps_pid else None), None)
                 for tid, _ in notes.threads]
        text, name, why = perf
        threads, modules, unwind_errors = unwind_threads(space, infos, max_frames, cache,
                                                         (text, name))
        errors = errors + space.located.errors + ([why] if why else []) + unwind_errors
        if text is not None:
            core_info["perf_map"] = name
        elsewhere = stage(errors, "saying how files were found", found_files, space, modules,
                          fallback=dict)
        for i, thread in enumerate(threads):
            thread["tid"] = tids.get(thread["tid"], (thread["tid"], None))[0]
            if i == 0:
                thread["crashed"] = True
        main = tids.get(ps_pid, (ps_pid, None))[0]
        threads.sort(key=lambda t: (t["tid"] != main, t["tid"]))
        space.close()
    timings = dict(timings, unwind_ms=round((time.monotonic() - t0) * 1000, 3))
    out = report.build("core", process, threads, modules, stopped_at, timings, errors, {})
    for module in out["modules"]:
        if module["start"] in elsewhere:
            module["file"] = elsewhere[module["start"]]
    out["core"] = core_info
    if sig:
        out["signal"] = sig
    return out


def from_core_stream(fd: int, kernel: dict, errors: list[str], opts, seen: Seen,
                     cache: ImageCache | None = None, arrived=None, head: bytes = b"") -> dict:
    """The core arriving on `fd` from the kernel, with what the handler read
    of the process from /proc before it (`seen`: metadata, threads, its
    mapped files already open). `arrived()` is called once the core is read;
    `head`: its first bytes, already taken from `fd`."""
    from .targets.stream import stream
    t0 = time.monotonic()
    pid = kernel.get("P")

    def files(layout):  # those the core names
        return {start: path for start, path in seen.files.items() if start in layout.notes.files}

    got = stream(fd, opts.stack_window, opts.keep, opts.idle_timeout, files, head=head)
    read_ms = (time.monotonic() - t0) * 1000
    if arrived is not None:
        arrived()
    ended = kernel.get("t", time.time())
    perf = (None, "", None)
    if seen.perf_map is not None and got.layout is not None:
        name, text, mtime = seen.perf_map
        perf = perfmap.for_core(
            got.layout, lambda n: (text.decode("utf-8", "replace"), mtime) if n == name else None,
            ended, seen.started)
    process = core_process(got.layout, pid)
    process.update(seen.live)
    for key, letter in (("uid", "u"), ("gid", "g")):
        if process.get(key) is None and letter in kernel:
            process[key] = kernel[letter]
    if "e" in kernel and not process.get("name"):
        process["name"] = kernel["e"]
    core_info = {"bytes": got.bytes_read, "kept_bytes": got.bytes_kept,
                 "expected_bytes": got.layout.size if got.layout else None,
                 "read_ms": round(read_ms, 3)}
    if "I" in kernel:
        core_info["crashed_tid"] = kernel["I"]
    timings = {"stopped_ms": round(read_ms, 3), "read_ms": round(read_ms, 3)}
    sig = signal_dict(got.layout.notes.siginfo if got.layout else None, kernel.get("s"))
    out = core_report(got.space, process, errors + seen.errors + got.errors, opts.max_frames,
                      ended, timings, core_info, sig, seen.tids, cache, perf)
    if "h" in kernel:
        out["host"]["hostname"] = kernel["h"]
    out["timings"]["total_ms"] = round((time.monotonic() - t0) * 1000, 3)
    return out


def failure_report(kernel: dict, why: str, seen: Seen | None = None,
                   errors: tuple[str, ...] = ()) -> dict:
    """What is left to say when handling a core failed outright: the kernel's
    arguments, and what /proc said (`seen`) if it was read."""
    seen = seen or Seen()
    process = core_process(None, kernel.get("P"))
    process.update(name=kernel.get("e"), uid=kernel.get("u"), gid=kernel.get("g"))
    process.update(seen.live)
    threads = []
    main = kernel.get("P")
    for tid, name in sorted(seen.tids.values(), key=lambda t: (t[0] != main, t[0])):
        thread = report.thread_dict(
            ThreadInfo(tid, name, None, "not unwound: the core was not analysed"), None, None)
        if tid == kernel.get("I"):
            thread["crashed"] = True
        threads.append(thread)
    return report.build("core", process, threads, [], kernel.get("t", time.time()),
                        {"stopped_ms": 0.0, "unwind_ms": 0.0},
                        [*errors, *seen.errors, why], {})
