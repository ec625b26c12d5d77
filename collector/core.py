"""`collector core`: a report from an ELF core file, or from the core the
kernel hands to a core_pattern handler (pipe mode here, socket mode in
serve.py).

Under the kernel the handler runs as root with no environment and no
stdout/stderr: the report is written to a file (--output, or a new file in
--report-dir), and whatever goes wrong becomes an error in that report.
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import time

from unwinder.elf import ElfError, ElfFile
from unwinder.modules import Module

from . import redact, report
from .collect import ThreadInfo, unwind_threads
from .errors import BadCore, UsageError
from .targets import core as coretarget
from .targets.crashed import Crashed

# The core_pattern specifiers the handler takes, as LETTER=VALUE arguments
# (core_pattern is at most 127 bytes, and a LETTER=VALUE list still parses
# when a kernel leaves a specifier out).
KERNEL_ARGS = "P=%P I=%I s=%s t=%t u=%u g=%g h=%h F=%F e=%e"
PAGE = 4096
FAULT_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGTRAP}
_NUMERIC = set("PpIisugtF")


def kernel_args(items: list[str]) -> tuple[dict, list[str]]:
    """{'P': 1234, 'e': 'name', ...} from LETTER=VALUE arguments."""
    out: dict = {}
    errors = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or len(key) != 1:
            errors.append(f"ignored handler argument {item!r} (expected LETTER=VALUE)")
        elif value == "":
            continue  # a specifier this kernel does not know expands to nothing
        elif key in _NUMERIC:
            try:
                out[key] = int(value)
            except ValueError:
                errors.append(f"ignored handler argument {item!r} (not a number)")
        else:
            out[key] = value
    return out, errors


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


def core_process(layout: coretarget.Layout | None, pid: int | None) -> dict:
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


def stale_files(space: coretarget.CoreSpace, modules: list[Module]) -> list[str]:
    """A file on disk may not be the one that crashed (rebuilt, upgraded):
    compare its build-id with the one in the ELF header page the kernel
    dumps (coredump_filter bit 4, on by default)."""
    out = []
    for m in modules:
        page = space.dumped(m.start, PAGE) if m.build_id else None
        try:
            dumped = ElfFile(page, m.path).build_id() if page else None
        except ElfError:
            continue
        if dumped and dumped != m.build_id:
            m.error = f"build-id {m.build_id} on disk, {dumped} in the core"
            out.append(f"{m.path}: the file here is not the one that crashed "
                       f"({m.error}): its frames are not to be trusted")
    return out


def build_report(space: coretarget.CoreSpace | None, process: dict, errors: list[str],
                 max_frames: int, stopped_at: float, timings: dict, core_info: dict,
                 sig: dict | None, tids: dict[int, tuple[int, str | None]] | None = None) -> dict:
    """The report: threads in the order main, then by tid, the thread that
    dumped (the first NT_PRSTATUS) marked `crashed`. `tids` translates the
    core's thread ids (the process's pid namespace) to ours, with names."""
    tids = tids or {}
    threads, modules = [], []
    t0 = time.monotonic()
    if space is not None:
        notes = space.layout.notes
        ps_pid = notes.psinfo["pid"] if notes.psinfo else None
        # the core names no thread; /proc does while the process exists
        infos = [ThreadInfo(tid, tids.get(tid, (tid, None))[1]
                            or (process.get("name") if tid == ps_pid else None), None)
                 for tid, _ in notes.threads]
        threads, modules, unwind_errors = unwind_threads(space, infos, max_frames)
        errors = errors + unwind_errors + stale_files(space, modules)
        for i, thread in enumerate(threads):
            thread["tid"] = tids.get(thread["tid"], (thread["tid"], None))[0]
            if i == 0:
                thread["crashed"] = True
        main = tids.get(ps_pid, (ps_pid, None))[0]
        threads.sort(key=lambda t: (t["tid"] != main, t["tid"]))
        space.close()
    timings = dict(timings, unwind_ms=round((time.monotonic() - t0) * 1000, 3))
    out = report.build("core", process, threads, modules, stopped_at, timings, errors, {})
    out["core"] = core_info
    if sig:
        out["signal"] = sig
    return out


def from_file(path: str, max_frames: int) -> dict:
    t0 = time.monotonic()
    try:
        space, size = coretarget.open_file(path)
    except coretarget.CoreError as e:
        raise BadCore(f"{path}: {e}") from None
    layout = space.layout
    process = core_process(layout, None)
    core_info = {"path": os.path.abspath(path), "bytes": size, "expected_bytes": layout.size}
    timings = {"stopped_ms": 0.0, "read_ms": round((time.monotonic() - t0) * 1000, 3)}
    out = build_report(space, process, list(layout.errors), max_frames,
                       os.stat(path).st_mtime, timings, core_info,
                       signal_dict(layout.notes.siginfo, None))
    out["timings"]["total_ms"] = round((time.monotonic() - t0) * 1000, 3)
    return out


def from_stream(fd: int, kernel: dict, errors: list[str], opts, pidfd: int | None = None) -> dict:
    """The core arriving on `fd` from the kernel. The crashed process is
    held by the kernel until the core has been read, so its /proc entry is
    read first; its mapped files are opened as soon as the notes name them."""
    t0 = time.monotonic()
    pid = kernel.get("P")
    crashed = Crashed(pid, pidfd if pidfd is not None else kernel.get("F")) if pid else None
    live = crashed.info() if crashed else {}
    tids = crashed.threads() if crashed else {}
    files = None
    if crashed is not None:
        def files(layout):  # those holding code: the modules
            mapped = layout.notes.files.items()
            code = {path for start, (_, _, path) in mapped if layout.is_code(start)}
            return crashed.open_files([(start, end, path) for start, (end, _, path) in mapped
                                       if path in code])
    got = coretarget.stream(fd, opts.stack_window, opts.keep, opts.idle_timeout, files)
    read_ms = (time.monotonic() - t0) * 1000
    if crashed is not None:
        if crashed.error:
            errors = errors + [crashed.error]
        crashed.close()
    process = core_process(got.layout, pid)
    process.update(live)
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
    out = build_report(got.space, process, errors + got.errors, opts.max_frames,
                       kernel.get("t", time.time()), timings, core_info, sig, tids)
    if "h" in kernel:
        out["host"]["hostname"] = kernel["h"]
    out["timings"]["total_ms"] = round((time.monotonic() - t0) * 1000, 3)
    return out


def failure_report(kernel: dict, why: str) -> dict:
    """What is left to say when handling a core failed outright."""
    process = core_process(None, kernel.get("P"))
    process.update(name=kernel.get("e"), uid=kernel.get("u"), gid=kernel.get("g"))
    return report.build("core", process, [], [], kernel.get("t", time.time()),
                        {"stopped_ms": 0.0, "unwind_ms": 0.0}, [why], {})


def write_report(out: dict, output: str | None, report_dir: str | None) -> str:
    """Write atomically with mode 0600: to `output`, or a new file in `report_dir`."""
    if output is None:
        os.makedirs(report_dir, mode=0o700, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        output = os.path.join(report_dir, f"core-{stamp}-{out['process']['pid']}-"
                                          f"{out['report_id'][:8]}.json")
    tmp = f"{output}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    os.rename(tmp, output)
    return output


def handle_kernel_core(fd: int, kernel: dict, errors: list[str], opts,
                       pidfd: int | None = None) -> dict:
    """Pipe and socket mode: always a report, even after a bug in us (then
    with the error), and the input always drained."""
    try:
        return from_stream(fd, kernel, errors, opts, pidfd)
    except Exception as e:  # a bug in us: the report says so rather than nothing
        coretarget.drain(fd)
        return failure_report(kernel, f"internal error: {type(e).__name__}: {e}")


def finish(out: dict, opts) -> str:
    """Symbolize a handler's report (as cli.main does for the reports it
    emits) and send it: to --output or --report-dir (redacted, fingerprinted
    and storm-controlled as delivery does), else through `emit` to the
    configured sinks. Returns where it went."""
    budget = getattr(opts, "symbolize_budget", 0)
    if budget > 0:
        try:
            from .symbolize import symbolize
            symbolize(out, budget)
        except Exception as e:
            out["errors"].append(f"symbolization failed: {type(e).__name__}: {e}")
    if opts.output or opts.report_dir:
        delivery = getattr(opts, "delivery", None)  # set up by cli.main
        out = delivery.prepare(out) if delivery else redact.apply(out, redact.Policy())
        if out is None:
            return "nowhere: held back by storm control"
        return write_report(out, opts.output, opts.report_dir)
    from .cli import emit
    emit(out, opts)
    return "the configured sinks"


def run(args) -> dict | None:
    if args.from_kernel:
        kernel, errors = kernel_args(args.file_or_specs)
        finish(handle_kernel_core(0, kernel, errors, args), args)
        return None
    if len(args.file_or_specs) != 1:
        raise UsageError("give one core file (or --from-kernel with core_pattern specifiers)")
    out = from_file(args.file_or_specs[0], args.max_frames)
    if args.output or args.report_dir:
        finish(out, args)
        return None
    return out


def add_stream_options(p) -> None:
    from .cli import positive, size
    p.add_argument("--stack-window", type=size, default=coretarget.DEFAULT_STACK_WINDOW,
                   metavar="BYTES", help="stack bytes kept per thread (default 256K)")
    p.add_argument("--keep", type=size, default=coretarget.DEFAULT_KEEP, metavar="BYTES",
                   help="bytes of the core kept in memory in all (default 32M)")
    p.add_argument("--idle-timeout", type=positive, default=30, metavar="SECONDS",
                   help="give up on a core that stops arriving (default 30)")
    p.add_argument("--report-dir", metavar="DIR",
                   help="write each report to a new file in DIR (mode 0600) rather than to "
                   "the configured sinks")
    p.add_argument("--output", metavar="FILE", help="write the report to FILE (mode 0600)")


def register(sub) -> None:
    from .cli import add_unwind_options, command_parser
    c = command_parser(sub, "core", help="backtrace every thread of a core dump",
                       description="Report on an ELF core file, or (--from-kernel) on the core "
                       "the kernel pipes to a core_pattern handler: "
                       f"'|/path/to/collector core --from-kernel {KERNEL_ARGS}'.")
    c.add_argument("file_or_specs", nargs="*", metavar="FILE | LETTER=VALUE",
                   help="a core file; with --from-kernel, core_pattern specifiers")
    c.add_argument("--from-kernel", action="store_true",
                   help="read the core from stdin, as a core_pattern '|' handler")
    add_unwind_options(c)
    add_stream_options(c)
    c.set_defaults(run=run)
