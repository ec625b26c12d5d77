"""Threads held under ptrace: PTRACE_SEIZE + PTRACE_INTERRUPT (never
PTRACE_ATTACH, which queues a SIGSTOP), wait for the stop, GETREGS, DETACH
with whatever signal the thread was about to receive. And why a seize is
not permitted, said so the operator can fix it."""
from __future__ import annotations

import errno
import os
import _signal as signal  # signal itself wraps it in enums: enum before the first stop
import time

from unwinder.regs import NUMBERS

from ..errors import ExitedDuringAttach, NotPermitted, TimedOut
from . import procfs, ptrace_func
from .procfs import ThreadInfo
from .ptrace_func import PtraceError

PTRACE_SEIZE = 0x4206      # not in python-ptrace
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
WALL = 0x40000000          # __WALL: wait for threads too
SPIN = 0.0002  # seconds of polling for a stop before sleeping on SIGCHLD


def gone(held: "Held") -> bool:
    """Every thread that failed to stop had exited."""
    return all(why.startswith("exited") for why in held.failed.values())


class Held:
    """The threads this collector has seized, and their release."""

    def __init__(self, pid: int):
        self.pid = pid
        self.seized: set[int] = set()
        self.stopped: dict[int, int] = {}   # tid -> signal to hand back on detach
        self.failed: dict[int, str] = {}
        self.errors: list[str] = []
        self.released: set[int] = set()   # detached
        self.reaped: set[int] = set()     # exited, and their exit taken by our wait

    def hold(self, stop, copy) -> float:
        """stop(), then copy() while held; always release. Returns ms held."""
        t0 = time.monotonic()
        try:
            stop()
            if self.stopped:
                copy()
        finally:
            self.release()
        return (time.monotonic() - t0) * 1000 if self.stopped else 0.0

    def stop(self, tids: list[int], deadline: float, spin: bool = True) -> None:
        """`spin`: poll for the stops a moment before sleeping on them, for
        threads that run (on another cpu: they trap within microseconds).
        One that sleeps must first be woken, maybe onto our own cpu, which
        a poll would keep from it."""
        for tid in tids:
            self._seize(tid)
        self._wait(deadline, spin)

    def stop_all(self, infos: dict[int, ThreadInfo], deadline: float) -> None:
        # Threads created while we stop the others appear in the next listing;
        # once every listed thread is stopped no new one can appear.
        for fresh in procfs.new_threads(self.pid, self.known):
            for tid in fresh:
                self._seize(tid)
                infos.setdefault(tid, ThreadInfo(tid, procfs.comm(self.pid, tid), "R"))
            self._wait(deadline)
        if not self.stopped:
            if self.failed and gone(self):
                raise ExitedDuringAttach(f"pid {self.pid} exited while being attached")
            raise TimedOut(f"no thread of pid {self.pid} stopped in time")

    def known(self, tid: int) -> bool:
        return tid in self.seized or tid in self.failed

    def _seize(self, tid: int) -> None:
        try:
            ptrace_func.ptrace(PTRACE_SEIZE, tid, 0, 0)
        except PtraceError as e:
            if e.errno == errno.ESRCH:
                self.failed[tid] = "exited before it could be stopped"
                return
            if e.errno == errno.EPERM:
                # an exiting thread refuses a tracer too: that is no permission problem
                state = procfs.state(self.pid, tid)
                if state is None:
                    self.failed[tid] = "exited before it could be stopped"
                    return
                if state in ("Z", "X"):  # e.g. a main thread that called pthread_exit
                    self.failed[tid] = "exited (the process lives on in its other threads)"
                    return
                raise NotPermitted(why_not_permitted(self.pid)) from None
            raise
        self.seized.add(tid)
        try:
            ptrace_func.ptrace(PTRACE_INTERRUPT, tid, 0, 0)
        except PtraceError:
            pass  # it exited; the wait reports that

    def interrupt(self, tids: list[int], deadline: float) -> None:
        """Stop threads this collector already traces (run, watch)."""
        for tid in tids:
            self.seized.add(tid)
            try:
                ptrace_func.ptrace(PTRACE_INTERRUPT, tid, 0, 0)
            except PtraceError:
                pass  # it exited; the wait reports that
        self._wait(deadline)

    def _wait(self, deadline: float, spin: bool = True) -> None:
        pending = [t for t in self.seized if t not in self.stopped and t not in self.failed]
        # Every tracee stop sends the tracer SIGCHLD: sleep on it, not on a timer.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            spin_until = time.monotonic() + (SPIN if spin else 0)
            while pending:
                pending = [tid for tid in pending if not self._reap(tid)]
                if not pending:
                    break
                if time.monotonic() < spin_until:
                    continue  # a running thread traps within microseconds
                # a killed thread whose exit waits on threads we hold never
                # reports it: ask /proc instead of waiting out the deadline
                pending = [tid for tid in pending if not self._dead(tid)]
                left = deadline - time.monotonic()
                if left <= 0:
                    for tid in pending:
                        self.failed[tid] = (f"did not stop in time (state "
                                            f"{procfs.state(self.pid, tid)}); "
                                            "released when the collector exits")
                        self.errors.append(f"thread {tid}: {self.failed[tid]}")
                    return
                signal.sigtimedwait({signal.SIGCHLD}, min(left, 0.05))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _dead(self, tid: int) -> bool:
        if procfs.state(self.pid, tid) in (None, "Z", "X"):
            self.failed[tid] = "exited while being stopped"
            return True
        return False

    def _reap(self, tid: int) -> bool:
        """True once the thread has stopped or gone."""
        try:
            got, status = os.waitpid(tid, os.WNOHANG | WALL)
        except ChildProcessError:
            got, status = tid, 0
        if got == 0:
            return False
        if os.WIFSTOPPED(status):
            # a signal-delivery-stop (no event) holds a signal we must not lose
            self.stopped[tid] = os.WSTOPSIG(status) if status >> 16 == 0 else 0
        else:
            self.failed[tid] = "exited while being stopped"
            self.reaped.add(tid)
        return True

    def registers(self) -> dict[int, dict[int, int]]:
        return {tid: by_number(raw) for tid, raw in self.raw_registers().items()}

    def raw_registers(self) -> dict:
        """user_regs_struct per stopped thread (converted once released)."""
        regs = {}
        for tid in self.stopped:
            try:
                regs[tid] = ptrace_func.ptrace_getregs(tid)
            except PtraceError as e:
                self.failed[tid] = ("exited while being stopped" if e.errno == errno.ESRCH
                                    else f"cannot read registers: {os.strerror(e.errno or 0)}")
        return regs

    def release(self) -> None:
        """Detach every stopped thread, those with a signal to receive last: a
        fatal one kills the others, and one killed while still traced is a
        zombie only its tracer can reap."""
        for tid, sig in sorted(self.stopped.items(), key=lambda item: item[1] != 0):
            try:
                ptrace_func.ptrace(ptrace_func.PTRACE_DETACH, tid, 0, sig)
                self.released.add(tid)
            except PtraceError as e:
                if e.errno != errno.ESRCH:
                    self.errors.append(f"thread {tid}: detach failed: {e}")
                    continue
                try:  # killed while held: reap it, or its exit waits for ours
                    if os.waitpid(tid, os.WNOHANG | WALL)[0] == tid:
                        self.reaped.add(tid)
                except ChildProcessError:
                    self.reaped.add(tid)
        self.seized -= set(self.stopped)


def by_number(raw) -> dict[int, int]:
    """A user_regs_struct as known registers by DWARF number."""
    return {number: getattr(raw, name) for name, number in NUMBERS.items()}


def why_not_permitted(pid: int) -> str:
    tracer = procfs.status_field(pid, "TracerPid")
    if tracer and tracer != "0":
        return (f"not permitted to trace pid {pid}: it is already traced by pid {tracer} "
                "(a debugger or strace?); detach that first")
    uid = procfs.status_field(pid, "Uid")
    owner = int(uid.split()[1]) if uid else None
    if os.geteuid() != 0 and owner is not None and owner != os.geteuid():
        return (f"not permitted to trace pid {pid}: it runs as uid {owner} and the "
                f"collector as uid {os.geteuid()}; run the collector as root or as that user")
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = f.read().strip()
    except OSError:
        scope = "0"
    if scope == "3":
        return "not permitted: kernel.yama.ptrace_scope=3 forbids all ptrace until reboot"
    if scope in ("1", "2") and os.geteuid() != 0:
        return (f"not permitted to trace pid {pid}: kernel.yama.ptrace_scope={scope} "
                "allows it only with CAP_SYS_PTRACE; run as root")
    return (f"not permitted to trace pid {pid}: the collector lacks CAP_SYS_PTRACE over it "
            "(run as root; a setuid or non-dumpable process needs root)")
