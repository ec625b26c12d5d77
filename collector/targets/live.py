"""A live process: stop every thread, copy what unwinding needs, let go.

PTRACE_SEIZE + PTRACE_INTERRUPT (never PTRACE_ATTACH, which queues a
SIGSTOP), GETREGS, one process_vm_readv for all stacks, DETACH. A signal
that arrives while a thread is held is handed back on DETACH, a stopped
process stays stopped (the kernel keeps the group stop across a seize), and
SIGINT/SIGTERM to the collector wait until every thread is released.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field

from ptrace import PtraceError
from ptrace.binding import func as ptrace_func

from unwinder.regs import NUMBERS
from unwinder.space import Mapping, MapIndex

from ..collect import ThreadInfo
from ..errors import (ExitedDuringAttach, KernelThread, NoSuchProcess, NotPermitted,
                      OwnProcess, TimedOut, Zombie)
from . import procfs
from .snapshot import Snapshot
from .vmread import read_ranges

PTRACE_SEIZE = 0x4206      # not in python-ptrace
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
WALL = 0x40000000          # __WALL: wait for threads too
RED_ZONE = 128
DEFAULT_STACK_WINDOW = 256 << 10
DEFAULT_STOP_TIMEOUT = 2.0
_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


@dataclass
class Capture:
    snapshot: Snapshot
    threads: list[ThreadInfo]
    stopped_at: float          # time.time() when the first thread was stopped
    stopped_ms: float
    errors: list[str] = field(default_factory=list)


def check_target(pid: int) -> None:
    """Refuse what cannot or must not be traced, with a reason."""
    if pid == os.getpid():
        raise OwnProcess(f"pid {pid} is the collector itself")
    if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
        raise NoSuchProcess(f"no process with pid {pid}")
    try:
        fields = procfs.stat_fields(pid)
    except OSError:
        raise NoSuchProcess(f"no process with pid {pid}") from None
    if fields[0] in ("Z", "X"):
        raise Zombie(f"pid {pid} is a zombie: it has exited and has no stack left; "
                     f"its parent (pid {fields[1]}) has not reaped it")
    if int(fields[6]) & procfs.PF_KTHREAD:
        raise KernelThread(f"pid {pid} is a kernel thread: it has no user-space stack")


def capture(pid: int, stack_window: int = DEFAULT_STACK_WINDOW,
            timeout: float = DEFAULT_STOP_TIMEOUT) -> Capture:
    check_target(pid)
    infos = {tid: ThreadInfo(tid, procfs.comm(pid, tid), procfs.state(pid, tid))
             for tid in _list_tids(pid)}
    held = _Held(pid)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        t0 = time.monotonic()
        stopped_at = time.time()
        held.stop_all(infos, deadline=t0 + timeout)
        regs = held.registers()
        mappings = procfs.maps(pid)
        regions = _copy_stacks(pid, mappings, regs, stack_window)
    finally:
        held.release()
        stopped_ms = (time.monotonic() - t0) * 1000 if held.stopped else 0.0
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    for tid, why in held.failed.items():
        infos.setdefault(tid, ThreadInfo(tid, None, None)).error = why
    order = sorted(infos, key=lambda tid: (tid != pid, tid))
    regs = {tid: regs[tid] for tid in order if tid in regs}
    return Capture(Snapshot(pid, mappings, regs, regions), [infos[t] for t in order],
                   stopped_at, stopped_ms, held.errors)


def _list_tids(pid: int) -> list[int]:
    try:
        return procfs.tids(pid)
    except OSError:
        raise ExitedDuringAttach(f"pid {pid} exited before it could be stopped") from None


class _Held:
    """The threads this collector has seized, and their release."""

    def __init__(self, pid: int):
        self.pid = pid
        self.seized: set[int] = set()
        self.stopped: dict[int, int] = {}   # tid -> signal to hand back on detach
        self.failed: dict[int, str] = {}
        self.errors: list[str] = []

    def stop_all(self, infos: dict[int, ThreadInfo], deadline: float) -> None:
        # Threads created while we stop the others appear in the next listing;
        # once every listed thread is stopped no new one can appear.
        while True:
            try:
                fresh = [t for t in procfs.tids(self.pid) if t not in self.seized]
            except OSError:
                fresh = []
            fresh = [t for t in fresh if t not in self.failed]
            if not fresh:
                break
            for tid in fresh:
                self._seize(tid)
                infos.setdefault(tid, ThreadInfo(tid, procfs.comm(self.pid, tid), "R"))
            self._wait(deadline)
        if not self.stopped:
            if self.failed and all("exited" in why for why in self.failed.values()):
                raise ExitedDuringAttach(f"pid {self.pid} exited while being attached")
            raise TimedOut(f"no thread of pid {self.pid} stopped in time")

    def _seize(self, tid: int) -> None:
        try:
            ptrace_func.ptrace(PTRACE_SEIZE, tid, 0, 0)
        except PtraceError as e:
            if e.errno == errno.ESRCH:
                self.failed[tid] = "exited before it could be stopped"
                return
            if e.errno == errno.EPERM:
                raise NotPermitted(_why_not_permitted(self.pid)) from None
            raise
        self.seized.add(tid)
        try:
            ptrace_func.ptrace(PTRACE_INTERRUPT, tid, 0, 0)
        except PtraceError:
            pass  # it exited; the wait reports that

    def _wait(self, deadline: float) -> None:
        pending = [t for t in self.seized if t not in self.stopped and t not in self.failed]
        pause = 0.00002
        while pending:
            still = []
            for tid in pending:
                try:
                    got, status = os.waitpid(tid, os.WNOHANG | WALL)
                except ChildProcessError:
                    self.failed[tid] = "exited while being stopped"
                    continue
                if got == 0:
                    still.append(tid)
                elif os.WIFSTOPPED(status):
                    sig = os.WSTOPSIG(status)
                    # a signal-delivery-stop (no event) holds a signal we must not lose
                    self.stopped[tid] = sig if status >> 16 == 0 else 0
                else:
                    self.failed[tid] = "exited while being stopped"
            pending = still
            if pending:
                if time.monotonic() > deadline:
                    for tid in pending:
                        self.failed[tid] = (f"did not stop in time (state "
                                            f"{procfs.state(self.pid, tid)}); "
                                            "released when the collector exits")
                        self.errors.append(f"thread {tid}: {self.failed[tid]}")
                    return
                time.sleep(pause)
                pause = min(pause * 2, 0.002)

    def registers(self) -> dict[int, dict[int, int]]:
        regs = {}
        for tid in self.stopped:
            try:
                raw = ptrace_func.ptrace_getregs(tid)
            except PtraceError as e:
                self.failed[tid] = f"cannot read registers: {e}"
                continue
            regs[tid] = {NUMBERS[name]: getattr(raw, name) for name in NUMBERS}
        return regs

    def release(self) -> None:
        for tid, sig in self.stopped.items():
            try:
                ptrace_func.ptrace(ptrace_func.PTRACE_DETACH, tid, 0, sig)
            except PtraceError as e:
                if e.errno != errno.ESRCH:
                    self.errors.append(f"thread {tid}: detach failed: {e}")
        self.seized -= set(self.stopped)


def _copy_stacks(pid: int, mappings: list[Mapping], regs: dict[int, dict[int, int]],
                 window: int) -> list[tuple[int, bytes]]:
    """Each thread's stack from just below rsp up to `window` bytes (or the
    end of its mapping), and the vdso, in one process_vm_readv."""
    index = MapIndex(mappings)
    wanted = []
    for r in regs.values():
        sp = r[NUMBERS["rsp"]]
        m = index.find(sp)
        if m is not None:
            wanted.append((max(m.start, sp - RED_ZONE), min(m.end, sp + window)))
    wanted += [(m.start, m.end) for m in mappings if m.path == "[vdso]"]
    ranges = _merge(wanted)
    return [(start, data) for (start, size), data in zip(ranges, read_ranges(pid, ranges))
            if data is not None]


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi - lo) for lo, hi in merged]


def _why_not_permitted(pid: int) -> str:
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
