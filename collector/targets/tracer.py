"""Following a process until it is about to die of a signal.

`run` starts a program as a tracee, `watch` seizes a running process (every
thread, PTRACE_SEIZE with TRACECLONE, so new threads are traced too). Every
stop is passed through untouched: signals are handed back, group-stops are
kept with PTRACE_LISTEN. At the signal-delivery-stop of a fatal signal whose
disposition is the default action, every thread is held and `on_crash` runs;
then every thread is detached with its signal handed back, so the program
dies exactly as it would have (same status, core dump if the system takes one).

A fatal signal the program catches is passed on: if the handler recovers there
is nothing to report; if it re-raises or returns to the fault with the default
restored, the next delivery-stop is the one reported.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import NoSuchProcess, NotPermitted
from . import DEFAULT_STACK_WINDOW, DEFAULT_STOP_TIMEOUT, procfs, ptrace_func
from .held import (PTRACE_EVENT_STOP, PTRACE_INTERRUPT, PTRACE_SEIZE, WALL, Held,
                   why_not_permitted)
from .live import Capture, assemble
from .procfs import ThreadInfo
from .ptrace_func import PtraceError
from .vmread import copy_stacks

FATAL = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT,
         signal.SIGTRAP, signal.SIGSYS)
STOP_SIGNALS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
COLLECTOR_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}
OPTIONS = 0x08 | 0x10        # PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC
EVENT_CLONE = 3
EVENT_EXEC = 4
GRACE = 0.5  # seconds a released child (run) is given to exit before the collector leaves
PTRACE_LISTEN = 0x4208


@dataclass
class Crash:
    tid: int
    signal: int
    siginfo: dict | None    # signo, code, addr
    capture: Capture
    t0: float               # time.monotonic() when the crash was seen


class Tracer:
    """The threads of one traced process and the loop that passes their stops on.

    Every wait is waitpid(-1, WNOHANG | __WALL), woken by SIGCHLD: never a wait
    on one pid while other threads are traced (an exited thread stays a traced
    zombie until its tracer reaps it, and the leader's exit waits for that)."""

    def __init__(self, pid: int, on_crash: Callable[[Crash], None],
                 stack_window: int = DEFAULT_STACK_WINDOW,
                 stop_timeout: float = DEFAULT_STOP_TIMEOUT, child: bool = False):
        self.pid = pid
        self.on_crash = on_crash
        self.stack_window = stack_window
        self.stop_timeout = stop_timeout
        self.child = child                # ours (run): follow until its exit status is known
        self.tracees: set[int] = set()
        self.status: int | None = None    # the wait status of the process, once known
        self.releasing = False            # every stop now detaches (after a crash, or told to)
        self.threads_by: float | None = None  # when releasing: give up on threads that never stop
        self.child_by: float | None = None    # when releasing: stop waiting for the child
        self.stopped_ms = 0.0             # how long the crash held the process

    def seize_all(self) -> None:
        """Trace every thread without stopping any: list, seize, list again
        until no new thread appears (later ones are traced through TRACECLONE)."""
        for fresh in procfs.new_threads(self.pid, self.tracees.__contains__):
            for tid in fresh:
                try:
                    ptrace_func.ptrace(PTRACE_SEIZE, tid, 0, OPTIONS)
                except PtraceError as e:
                    if e.errno == errno.ESRCH:
                        continue
                    if e.errno == errno.EPERM:
                        self.finish()
                        raise NotPermitted(why_not_permitted(self.pid)) from None
                    raise
                self.tracees.add(tid)
        if not self.tracees:
            raise NoSuchProcess(f"pid {self.pid} exited")

    def follow(self, on_signal: Callable[[signal.struct_siginfo], bool]) -> None:
        """Pass stops on until every thread is gone or released and, for a
        child, its exit status is known. Signals sent to the collector go to
        `on_signal`; if it returns True every thread is released, and the
        child waited for only GRACE seconds more."""
        while self._pending():
            info = signal.sigtimedwait({signal.SIGCHLD, *COLLECTOR_SIGNALS}, self._tick())
            if info is not None and info.si_signo != signal.SIGCHLD and on_signal(info):
                self.release(GRACE)
            self._drain()

    def finish(self) -> None:
        """Release whatever is still traced and settle, within bounded time."""
        if not self.releasing:
            self.release(GRACE)
        self.follow(lambda info: True)

    def release(self, child_wait: float | None) -> None:
        """From now on every stop detaches the thread (with the signal it was
        about to receive); interrupt them all so that each stops soon."""
        now = time.monotonic()
        if not self.releasing:
            self.releasing = True
            self.threads_by = now + self.stop_timeout
        if child_wait is not None:
            self.child_by = min(self.child_by or now + child_wait, now + child_wait)
        for tid in sorted(self.tracees):
            try:
                ptrace_func.ptrace(PTRACE_INTERRUPT, tid, 0, 0)
            except PtraceError:
                pass  # gone: wait reports its exit

    @property
    def unreleased(self) -> list[int]:
        """Threads still traced that would not stop (the kernel releases them
        when the collector exits)."""
        return sorted(self.tracees)

    def _pending(self) -> bool:
        now = time.monotonic()
        if self.tracees and (self.threads_by is None or now < self.threads_by):
            return True
        return (self.child and self.status is None
                and (self.child_by is None or now < self.child_by))

    def _tick(self) -> float:
        ends = [t for t in (self.threads_by, self.child_by) if t is not None]
        return max(0.001, min([1.0, *(t - time.monotonic() for t in ends)]))

    def _drain(self) -> None:
        while True:
            try:
                tid, status = os.waitpid(-1, os.WNOHANG | WALL)
            except ChildProcessError:   # nothing left to wait for
                self.tracees.clear()
                self.child = False
                return
            if tid == 0:
                return
            self._event(tid, status)

    def _event(self, tid: int, status: int) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self.tracees.discard(tid)
            if tid == self.pid:
                self.status = status
            return
        self.tracees.add(tid)     # a new thread may stop before its creator reports it
        sig, event = os.WSTOPSIG(status), status >> 16
        if event == EVENT_CLONE:
            new = _event_msg(tid)
            self.tracees.add(new)
            if self.releasing:
                _request(PTRACE_INTERRUPT, new, 0)
        elif event == EVENT_EXEC:  # an exec in another thread: that thread's id is gone
            former = _event_msg(tid)
            if former != tid:
                self.tracees.discard(former)
        if self.releasing:
            if _request(ptrace_func.PTRACE_DETACH, tid, sig if event == 0 else 0):
                self.tracees.discard(tid)
        elif event == 0:
            if sig in FATAL and default_action(self.pid, tid, sig):
                self._crash(tid, sig)
            else:
                _request(ptrace_func.PTRACE_CONT, tid, sig)
        elif event == PTRACE_EVENT_STOP and sig in STOP_SIGNALS:
            try:  # a group-stop: stay stopped, keep watching
                _request(PTRACE_LISTEN, tid, 0)
            except PtraceError:  # EIO: the group-stop ended (SIGCONT) before we got here
                _request(ptrace_func.PTRACE_CONT, tid, 0)
        else:
            _request(ptrace_func.PTRACE_CONT, tid, 0)

    def _crash(self, tid: int, sig: int) -> None:
        """Hold every thread, let on_crash take what it needs, release them all
        with their signals (the crashing thread's fatal one last)."""
        t0 = time.monotonic()
        stopped_at = time.time()
        infos = {t: procfs.thread(self.pid, t) for t in sorted(self.tracees)}
        held = Held(self.pid)
        held.seized.add(tid)
        held.stopped[tid] = sig
        try:
            info = siginfo(tid, sig)
            deadline = t0 + self.stop_timeout
            # threads created meanwhile are traced already (TRACECLONE)
            traced = sorted(self.tracees - held.seized)
            if traced:
                held.interrupt(traced, deadline)
            for fresh in procfs.new_threads(self.pid, held.known):
                for t in fresh:
                    infos.setdefault(t, ThreadInfo(t, procfs.comm(self.pid, t), "R"))
                    self.tracees.add(t)
                held.interrupt(fresh, deadline)
            regs = held.registers()
            mappings = procfs.maps(self.pid)
            regions = copy_stacks(self.pid, mappings, regs, self.stack_window)
            capture = assemble(self.pid, infos, held, regs, mappings, regions, stopped_at, 0.0)
            self.on_crash(Crash(tid, sig, info, capture, t0))
        finally:
            held.release()
            self.tracees -= held.released | held.reaped
            self.stopped_ms = (time.monotonic() - t0) * 1000
            # the rest (exited, or would not stop) is detached or reaped by follow();
            # the program is dying: its child status comes when it is done
            self.release(None)


@contextlib.contextmanager
def signals_blocked():
    """SIGCHLD and the signals meant for the collector wait for follow()'s
    sigtimedwait instead of interrupting it; yields the mask to restore
    (a child restores it before exec)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *COLLECTOR_SIGNALS})
    try:
        yield old
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def default_action(pid: int, tid: int, sig: int) -> bool:
    """The signal is neither caught nor ignored: delivering it runs the
    default action, which for FATAL signals ends the process."""
    status = procfs.status(pid, tid)
    try:
        masks = int(status["SigCgt"], 16) | int(status["SigIgn"], 16)
    except (KeyError, ValueError):
        return True
    return not masks & 1 << (sig - 1)


def siginfo(tid: int, sig: int) -> dict | None:
    """signo, code and addr of the signal a thread is stopped to receive."""
    try:
        info = ptrace_func.ptrace_getsiginfo(tid)
    except PtraceError:
        return None
    return {"signo": info.si_signo or sig, "code": info.si_code,
            "addr": info._sigfault._addr or 0}


def _event_msg(tid: int) -> int:
    try:
        return ptrace_func.ptrace_geteventmsg(tid)
    except PtraceError:
        return tid


def _request(request: int, tid: int, sig: int) -> bool:
    """False if the thread is gone meanwhile (wait reports its exit)."""
    try:
        ptrace_func.ptrace(request, tid, 0, sig)
    except PtraceError as e:
        if e.errno != errno.ESRCH:
            raise
        return False
    return True


def start(argv: list[str], mask, on_crash: Callable[[Crash], None], stack_window: int,
          stop_timeout: float) -> tuple[Tracer, str | None, int]:
    """Fork and exec `argv`, traced from its first instruction. Returns the
    tracer, why it could not be traced (it runs all the same), and the pipe
    on which a failed exec says why (read it with exec_error once followed:
    a child stopped before its exec would hold a read forever)."""
    pid, go, failed = _spawn(argv, mask)
    t = Tracer(pid, on_crash, stack_window, stop_timeout, child=True)
    untraced = None
    try:
        ptrace_func.ptrace(PTRACE_SEIZE, pid, 0, OPTIONS)
        t.tracees.add(pid)
    except PtraceError as e:
        untraced = str(e)
    finally:
        os.close(go)          # let the child exec, traced or not
    return t, untraced, failed


def exec_error(failed: int) -> str:
    """What the exec said, if it failed ('' if it has not, or not yet)."""
    try:
        return os.read(failed, 256).decode(errors="replace")
    except BlockingIOError:
        return ""
    finally:
        os.close(failed)


def _spawn(argv: list[str], mask) -> tuple[int, int, int]:
    """Fork a child that execs `argv` once `go` is closed (so it is traced
    from its first instruction); an exec error comes back on `failed`."""
    go_r, go_w = os.pipe()
    failed_r, failed_w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(failed_r, False)
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


def forward(pid: int, info) -> None:
    """A signal someone sent the collector itself goes on to the program; one
    from the terminal (si_code SI_KERNEL) reached the program on its own."""
    if info.si_code <= 0:
        try:
            os.kill(pid, info.si_signo)
        except ProcessLookupError:
            pass


def say_unreleased(t: Tracer) -> None:
    if t.unreleased:
        print(f"collector: threads {', '.join(map(str, t.unreleased))} of pid {t.pid} would "
              "not stop to be detached; the kernel releases them as the collector exits",
              file=sys.stderr)


def describe(status: int) -> str:
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    sig = os.WTERMSIG(status)
    core = " (core dumped)" if os.WCOREDUMP(status) else ""
    return f"was killed by {signal.Signals(sig).name}{core}"
