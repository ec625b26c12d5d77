"""A live process: stop every thread, copy what unwinding needs, let go.

Each thread is held (held.py) only while its registers and stack are
copied (vmread.py); a signal that arrives while a thread is held is handed
back on DETACH, a stopped process stays stopped (the kernel keeps the group
stop across a seize), and SIGINT/SIGTERM to the collector wait until every
thread is released.
"""
from __future__ import annotations

import gc
import os
import _signal as signal  # signal itself wraps it in enums: enum before the first stop
import time

from unwinder.space import Mapping, MapIndex

from ..errors import (ExitedDuringAttach, KernelThread, NoSuchProcess, NotPermitted,
                      OwnProcess, TimedOut, Zombie)
from . import DEFAULT_STACK_WINDOW, DEFAULT_STOP_TIMEOUT, procfs
from .held import Held, by_number, gone, why_not_permitted
from .procfs import ThreadInfo
from .snapshot import Snapshot
from .vmread import copy_ranges, copy_stacks, open_mem

_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


class Capture:
    """What a capture took (a plain class: dataclasses is not imported
    before the first stop, see unwinder.space.Mapping)."""

    def __init__(self, snapshot: Snapshot, threads: list[ThreadInfo], stopped_at: float,
                 stopped_ms: float, errors: list[str] | None = None):
        self.snapshot = snapshot
        self.threads = threads
        self.stopped_at = stopped_at    # time.time() when the first thread was stopped
        self.stopped_ms = stopped_ms
        self.errors = [] if errors is None else errors


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
    tids = _list_tids(pid)
    # each thread's name and state as found: all before the first stop when
    # all are held at once, else each just before its own hold
    infos = {tid: procfs.thread(pid, tid) for tid in tids} if freeze else {}
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
    if not copier.raw and held.failed and not gone(held):
        raise TimedOut(f"no thread of pid {pid} stopped within {timeout:g} s "
                       f"({'; '.join(sorted(set(held.failed.values())))})")
    if not copier.raw or not _alive(mm):
        raise ExitedDuringAttach(f"pid {pid} exited while being attached")
    return assemble(pid, infos, held, copier.regs, copier.mappings, regions + copier.regions,
                  stopped_at, longest, mm)


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
    for fresh in procfs.new_threads(pid, outcome.known):
        for tid in fresh:
            if tid not in infos:
                infos[tid] = procfs.thread(pid, tid)
            held = Held(pid)
            ms = held.hold(lambda: held.stop([tid], time.monotonic() + timeout,
                                             spin=infos[tid].state == "R"),
                           lambda: copier(held))
            longest = max(longest, ms)
            outcome.seized.add(tid)
            outcome.stopped.update(held.stopped)
            outcome.failed.update(held.failed)
            outcome.errors += held.errors
    return outcome, longest


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
        self.mem = open_mem(pid)  # None: process_vm_readv will say why, if it cannot either

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


def assemble(pid: int, infos: dict[int, ThreadInfo], held: Held, regs, mappings, regions,
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


