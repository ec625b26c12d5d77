"""`collector run [--] PROG ARGS...`: run a program as a tracee and report
the fatal signal it dies of, if it dies of one. The collector exits as the
program did: its exit code, or 128 + the number of the signal that killed it.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from ptrace import PtraceError
from ptrace.binding import func as ptrace_func

from . import report
from .attach import build_report
from .core import signal_dict
from .errors import CollectorError, UsageError
from .targets import live, tracer


class CannotRun(CollectorError):
    exit_code = 127  # as a shell says of a program it cannot execute


def run(argv: list[str], max_frames: int, stack_window: int, timeout: float,
        ) -> tuple[dict | None, int]:
    """(the report or None, the exit status to mirror)."""
    reports: list[dict] = []
    with tracer.signals_blocked() as mask:
        pid, go, failed = _spawn(argv, mask)
        t = tracer.Tracer(pid, lambda crash: reports.append(crash_report("run", crash, max_frames)),
                          stack_window, timeout)
        try:
            ptrace_func.ptrace(live.PTRACE_SEIZE, pid, 0, tracer.OPTIONS)
            t.tracees.add(pid)
        except PtraceError as e:  # the program runs all the same, without a report
            print(f"collector: cannot trace {argv[0]}: {e}", file=sys.stderr)
        finally:
            os.close(go)          # let the child exec, traced or not
        error = os.read(failed, 256)
        os.close(failed)
        try:
            t.follow(lambda info: _forward(pid, info))
        finally:
            t.detach_all()
        status = t.status if t.status is not None else os.waitpid(pid, 0)[1]
    if error:
        raise CannotRun(f"cannot run {argv[0]}: {error.decode(errors='replace')}")
    if reports:
        reports[0]["timings"]["stopped_ms"] = round(t.stopped_ms, 3)
    print(f"collector: {argv[0]} {describe(status)}", file=sys.stderr)
    code = os.waitstatus_to_exitcode(status)
    return (reports[0] if reports else None), code if code >= 0 else 128 - code


def crash_report(source: str, crash: tracer.Crash, max_frames: int) -> dict:
    """The report of a crash, built while the process is still held."""
    cap = crash.capture
    process = report.process_info(cap.snapshot.pid)
    # /proc says tracing-stop because we hold it; it was running into the fault
    process["state"] = "running"
    out = build_report(source, process, cap, crash.t0, max_frames, released=False)
    out["signal"] = signal_dict(crash.siginfo, crash.signal)
    for thread in out["threads"]:
        if thread["tid"] == crash.tid:
            thread["crashed"] = True
    return out


def describe(status: int) -> str:
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    sig = os.WTERMSIG(status)
    core = " (core dumped)" if os.WCOREDUMP(status) else ""
    return f"was killed by {signal.Signals(sig).name}{core}"


def _spawn(argv: list[str], mask) -> tuple[int, int, int]:
    """Fork a child that execs `argv` once `go` is closed (so it is traced
    from its first instruction); an exec error comes back on `failed`."""
    go_r, go_w = os.pipe()
    failed_r, failed_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(go_w)
            os.close(failed_r)
            os.read(go_r, 1)
            os.close(go_r)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(failed_w, (e.strerror or str(e)).encode())
        finally:
            os._exit(127)
    os.close(go_r)
    os.close(failed_w)
    return pid, go_w, failed_r


def _forward(pid: int, info) -> bool:
    """A signal someone sent the collector itself goes on to the program; one
    from the terminal (si_code SI_KERNEL) reached the program on its own."""
    if info.si_code <= 0:
        try:
            os.kill(pid, info.si_signo)
        except ProcessLookupError:
            pass
    return False


def register(sub) -> None:
    from .cli import add_stop_options, add_unwind_options, command_parser
    r = command_parser(sub, "run", help="run a program and report the crash it dies of",
                       description="Start PROG as a tracee. If a fatal signal (SEGV, BUS, ILL, "
                       "FPE, ABRT, TRAP, SYS) is about to kill it, report every thread's "
                       "backtrace, then let the signal proceed. Exits as PROG did "
                       "(128+N if it was killed by signal N).")
    r.add_argument("argv", nargs=argparse.REMAINDER, metavar="PROG [ARGS...]")
    add_unwind_options(r)
    add_stop_options(r)
    r.set_defaults(run=_command)


def _command(args):
    if args.argv[:1] == ["--"]:
        args.argv = args.argv[1:]
    if not args.argv:
        raise UsageError("collector run: which program? (collector run [--] PROG ARGS...)")
    found, args.exit_status = run(args.argv, args.max_frames, args.stack_window,
                                  args.stop_timeout)
    return found
