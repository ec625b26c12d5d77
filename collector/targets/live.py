"""A live process: stop every thread, copy what unwinding needs, let go.

PTRACE_SEIZE + PTRACE_INTERRUPT (never PTRACE_ATTACH, which queues a
SIGSTOP), GETREGS, one process_vm_readv for all stacks, DETACH. A signal
that arrives while a thread is held is handed back on DETACH, a stopped
process stays stopped (the kernel keeps the group stop across a seize), and
SIGINT/SIGTERM to the collector wait until every thread is released.
"""
from __future__ import annotations

import errno
import gc
import os
import signal
import time
from dataclasses import dataclass, field

from ptrace import PtraceError
from ptrace.binding import func as ptrace_func

from unwinder.regs import NUMBERS, RSP
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
SPIN = 0.0002  # seconds of polling for a stop before sleeping on SIGCHLD
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
    if fields[0] in ("Z", "X") and _memory_tid(pid) is None:
        raise Zombie(f"pid {pid} is a zombie: it has exited and has no stack left; "
                     f"its parent (pid {fields[1]}) has not reaped it")
    if int(fields[6]) & procfs.PF_KTHREAD:
        raise KernelThread(f"pid {pid} is a kernel thread: it has no user-space stack")


def capture(pid: int, stack_window: int = DEFAULT_STACK_WINDOW,
            timeout: float = DEFAULT_STOP_TIMEOUT, freeze: bool = False) -> Capture:
    """Registers and stack copies of every thread. By default one thread is
    held at a time (as eu-stack does), so no thread is stopped for longer than
    its own copy takes; `freeze` holds all of them at once for a snapshot
    that is consistent across threads."""
    check_target(pid)
    infos = {tid: ThreadInfo(tid, procfs.comm(pid, tid), procfs.state(pid, tid))
             for tid in _list_tids(pid)}
    mm = _memory_tid(pid) or pid
    mappings = _maps(mm)
    regions = copy_ranges(mm, [(m.start, m.end) for m in mappings if m.path == "[vdso]"])
    stopped_at = time.time()
    copier = _Copier(mm, mappings, stack_window)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    gc.disable()  # a collection pass inside a hold would stretch it by milliseconds
    try:
        if freeze:
            held = Held(pid)
            longest = held.hold(lambda: held.stop_all(infos, time.monotonic() + timeout),
                                lambda: copier(held))
        else:
            held, longest = _one_at_a_time(pid, infos, copier, timeout)
    finally:
        gc.enable()
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        copier.close()
    if not copier.raw and held.failed and not _gone(held):
        raise TimedOut(f"no thread of pid {pid} stopped within {timeout:g} s "
                       f"({'; '.join(sorted(set(held.failed.values())))})")
    if not copier.raw or not _alive(mm):
        raise ExitedDuringAttach(f"pid {pid} exited while being attached")
    return finish(pid, infos, held, copier.regs, copier.mappings, regions + copier.regions,
                  stopped_at, longest, mm)


def _gone(held: "Held") -> bool:
    return all(why.startswith("exited") for why in held.failed.values())


def _memory_tid(pid: int) -> int | None:
    """A live thread through which the address space can be read: the main
    thread, unless it has called pthread_exit (a zombie leader has no memory
    of its own while the other threads run on). None if every thread is gone."""
    try:
        tids = procfs.tids(pid)
    except OSError:
        return None
    # the main thread first: thread ids wrap around, so it need not be the lowest
    others = [t for t in tids if t != pid]
    return next((t for t in [pid, *others] if procfs.state(pid, t) not in (None, "Z", "X")),
                None)


def _one_at_a_time(pid, infos, copier, timeout):
    """Hold each thread only while its own registers and stack are copied.
    Returns every thread's outcome in one Held and the longest hold (ms)."""
    outcome = Held(pid)
    longest = 0.0
    while True:
        fresh = [t for t in _list_tids(pid) if t not in outcome.seized
                 and t not in outcome.failed]
        if not fresh:
            return outcome, longest
        for tid in fresh:
            infos.setdefault(tid, ThreadInfo(tid, procfs.comm(pid, tid), "R"))
            held = Held(pid)
            ms = held.hold(lambda: held.stop([tid], time.monotonic() + timeout),
                           lambda: copier(held))
            longest = max(longest, ms)
            outcome.seized.add(tid)
            outcome.stopped.update(held.stopped)
            outcome.failed.update(held.failed)
            outcome.errors += held.errors


class _Copier:
    """What is taken while threads are held: registers, then stacks. Only
    what must be done while held is done here; the rest waits for release."""

    def __init__(self, pid: int, mappings: list[Mapping], window: int):
        self.pid = pid
        self.mappings = mappings
        self.index = MapIndex(mappings)
        self.window = window
        self.raw: dict = {}  # user_regs_struct per thread, converted after release
        self.regions: list[tuple[int, bytes]] = []
        # opened before anything is held: one thread's stack is then one pread
        try:
            self.mem: int | None = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.mem = None  # process_vm_readv will say why, if it cannot either

    def __call__(self, held: "Held") -> None:
        raw = held.raw_registers()
        sps = {tid: r.rsp for tid, r in raw.items()}
        if any(self.index.find(sp) is None for sp in sps.values()):
            # a stack the mapping list did not show yet: a thread created since
            self.mappings = _maps(self.pid)
            self.index = MapIndex(self.mappings)
        self.regions += copy_stacks(self.pid, self.index, sps, self.window, self.mem)
        self.raw.update(raw)

    @property
    def regs(self) -> dict[int, dict[int, int]]:
        return {tid: by_number(r) for tid, r in self.raw.items()}

    def close(self) -> None:
        if self.mem is not None:
            os.close(self.mem)


def _maps(pid: int) -> list[Mapping]:
    try:
        return procfs.maps(pid)
    except PermissionError:
        raise NotPermitted(why_not_permitted(pid)) from None
    except OSError:
        raise ExitedDuringAttach(f"pid {pid} exited while being attached") from None


def _alive(pid: int) -> bool:
    return procfs.state(pid) not in (None, "Z", "X")


def finish(pid: int, infos: dict[int, ThreadInfo], held: Held, regs, mappings, regions,
           stopped_at: float, stopped_ms: float, mm: int | None = None) -> Capture:
    """`mm`: the thread whose /proc entries read the memory (default pid)."""
    errors = list(held.errors)
    for tid, why in held.failed.items():
        if why.startswith("exited"):  # nothing left of it to report
            infos.pop(tid, None)
            errors.append(f"thread {tid} {why}")
        else:
            infos.setdefault(tid, ThreadInfo(tid, None, None)).error = why
    for tid in [t for t, info in infos.items() if t not in regs and info.error is None]:
        infos.pop(tid)
        errors.append(f"thread {tid} exited before it could be stopped")
    order = sorted(infos, key=lambda tid: (tid != pid, tid))
    regs = {tid: regs[tid] for tid in order if tid in regs}
    return Capture(Snapshot(mm or pid, mappings, regs, regions), [infos[t] for t in order],
                   stopped_at, stopped_ms, errors)


def _list_tids(pid: int) -> list[int]:
    try:
        return procfs.tids(pid)
    except OSError:
        raise ExitedDuringAttach(f"pid {pid} exited before it could be stopped") from None


class Held:
    """The threads this collector has seized, and their release."""

    def __init__(self, pid: int):
        self.pid = pid
        self.seized: set[int] = set()
        self.stopped: dict[int, int] = {}   # tid -> signal to hand back on detach
        self.failed: dict[int, str] = {}
        self.errors: list[str] = []

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

    def stop(self, tids: list[int], deadline: float) -> None:
        for tid in tids:
            self._seize(tid)
        self._wait(deadline)

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
            if self.failed and _gone(self):
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

    def _wait(self, deadline: float) -> None:
        pending = [t for t in self.seized if t not in self.stopped and t not in self.failed]
        # Every tracee stop sends the tracer SIGCHLD: sleep on it, not on a timer.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            spin_until = time.monotonic() + SPIN
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
            self.failed[tid] = "exited while being stopped"
            return True
        if got == 0:
            return False
        if os.WIFSTOPPED(status):
            # a signal-delivery-stop (no event) holds a signal we must not lose
            self.stopped[tid] = os.WSTOPSIG(status) if status >> 16 == 0 else 0
        else:
            self.failed[tid] = "exited while being stopped"
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
        for tid, sig in self.stopped.items():
            try:
                ptrace_func.ptrace(ptrace_func.PTRACE_DETACH, tid, 0, sig)
            except PtraceError as e:
                if e.errno != errno.ESRCH:
                    self.errors.append(f"thread {tid}: detach failed: {e}")
                    continue
                try:  # killed while held: reap it, or its exit waits for ours
                    os.waitpid(tid, os.WNOHANG | WALL)
                except ChildProcessError:
                    pass
        self.seized -= set(self.stopped)


def copy_stacks(pid: int, mappings: list[Mapping] | MapIndex,
                regs: dict[int, dict[int, int] | int], window: int,
                mem: int | None = None) -> list[tuple[int, bytes]]:
    """Each thread's stack from just below rsp up to `window` bytes (or the
    end of its mapping), in one read: a pread of `mem` (an open
    /proc/PID/mem) for one range, else one process_vm_readv. `regs` gives
    each thread's registers, or just its rsp."""
    index = mappings if isinstance(mappings, MapIndex) else MapIndex(mappings)
    wanted = []
    for r in regs.values():
        sp = r if isinstance(r, int) else r[RSP]
        m = index.find(sp)
        if m is not None:
            wanted.append((max(m.start, sp - RED_ZONE), min(m.end, sp + window)))
    return copy_ranges(pid, wanted, mem)


def copy_ranges(pid: int, spans: list[tuple[int, int]],
                mem: int | None = None) -> list[tuple[int, bytes]]:
    ranges = merge_spans(spans)
    if mem is not None and len(ranges) == 1:
        (start, size), = ranges
        try:
            data = os.pread(mem, size, start)
        except OSError:
            data = b""
        if len(data) == size:
            return [(start, data)]
    return [(start, data) for (start, size), data in zip(ranges, read_ranges(pid, ranges))
            if data is not None]


def by_number(raw) -> dict[int, int]:
    """A user_regs_struct as known registers by DWARF number."""
    return {number: getattr(raw, name) for name, number in NUMBERS.items()}


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi - lo) for lo, hi in merged]


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
