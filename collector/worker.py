"""Analysis of untrusted input in a forked, unprivileged, bounded child; the
parent always ends with a report.

The kernel's core handler (`core --from-kernel`, `serve`) runs as root, but
what it analyses (the crashed process's memory, its ELF and DWARF files)
belongs to the crashing user. The parent keeps the privileged part: it reads
/proc/PID and opens the mapped files through map_files. It forks; the child
inherits those open fds and the core's, then before it reads anything
- takes the crashing user's uid and gid as its effective ids (files open as
  they would for that user; uid 0 becomes worker.user) and worker.user's
  uid as its real and saved uid, so the crashing user cannot signal, stop
  or prlimit it;
- drops supplementary groups and every capability (permitted, effective,
  inheritable, ambient, bounding set), sets no_new_privs and stops being
  dumpable (no ptrace, no /proc access, no core of its own);
- closes every other fd, and runs under RLIMIT_AS (worker.memory) and
  RLIMIT_CPU (worker.cpu); the parent kills it worker.timeout seconds after
  it says its input has arrived.
It answers with JSON lines on a pipe: its credentials as /proc/self/status
shows them, "input read", then the result. Whatever becomes of it (death,
hang, out of memory, a bug), the parent gets an Outcome saying so.
"""
from __future__ import annotations

import ctypes
import json
import os
import pwd
import resource
import select
import signal
import time
from dataclasses import dataclass, field

from .files import write_all

MAX_RESULT = 64 << 20        # bytes of JSON the parent takes from a worker at most
EXIT_MEMORY, EXIT_REFUSED, EXIT_BUG = 3, 4, 5
PR_GET_DUMPABLE, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 3, 4, 24, 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAPS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
STATUS_FIELDS = ("Uid", "Gid", "Groups", *CAPS, "NoNewPrivs", "Seccomp")


@dataclass
class Limits:
    """The [worker] configuration section."""
    user: str                  # analyses root's crashes; real uid of every worker
    memory: int                # RLIMIT_AS, bytes
    cpu: int                   # RLIMIT_CPU, seconds
    timeout: float             # wall-clock seconds once the input has arrived


@dataclass
class Identity:
    uid: int                   # effective (file access) uid and gid
    gid: int
    real: int                  # real and saved uid: who besides root may signal it


@dataclass
class Outcome:
    result: dict | None        # the task's answer, None if there is none
    error: str | None          # what became of the worker when there is no answer
    ms: float                  # fork to result
    arrived: bool = False      # the worker said it had read its input
    status: dict = field(default_factory=dict)  # the worker's credentials, from its /proc


class Refused(Exception):
    """Privileges could not be dropped: the worker analyses nothing."""


def identity(uid: int | None, gid: int | None, user: str) -> tuple[Identity, list[str]]:
    """The worker's ids for input owned by uid:gid (None: not known)."""
    errors = []
    try:
        pw = pwd.getpwnam(user)
        dedicated = (pw.pw_uid, pw.pw_gid)
    except KeyError:
        dedicated = (65534, 65534)
        errors.append(f"worker.user {user!r} is not a user here: the worker runs as 65534")
    if dedicated[0] == 0:
        dedicated = (65534, 65534)
        errors.append("worker.user must not be root: the worker runs as 65534")
    if not uid or gid is None:  # root's input, or nobody knows whose
        uid, gid = dedicated
    return Identity(uid, gid, dedicated[0]), errors


def run(task, ident: Identity, limits: Limits, keep: set[int]) -> Outcome:
    """task(arrived) -> a JSON-able dict, run in the worker; the task calls
    `arrived()` once its input has been read (the wall clock starts then).
    `keep`: the fds it needs (all others are closed in the worker)."""
    r, w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(task, ident, limits, keep | {w}, w)
    os.close(w)
    try:
        return _parent(pid, r, limits, t0)
    finally:
        os.close(r)


def _child(task, ident: Identity, limits: Limits, keep: set[int], w: int) -> None:
    code = EXIT_BUG
    try:
        _close_others(keep)
        _send(w, {"status": drop(ident, limits)})
        result = task(lambda: _send(w, {"arrived": True}))
        _send(w, {"result": result})
        code = 0
    except MemoryError:
        code = EXIT_MEMORY
    except Refused as e:
        _say(w, {"refused": str(e)})
        code = EXIT_REFUSED
    except BaseException as e:  # the worker must never return into the parent's code
        _say(w, {"bug": f"{type(e).__name__}: {e}"})
    finally:
        os._exit(code)


def _send(w: int, message: dict) -> None:
    write_all(w, json.dumps(message, separators=(",", ":")).encode() + b"\n")


def _say(w: int, message: dict) -> None:
    try:
        _send(w, message)
    except BaseException:
        pass


def _close_others(keep: set[int]) -> None:
    """Every fd but stdin/stdout/stderr and `keep` (sinks, sockets, state
    files of the parent are not the worker's)."""
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def drop(ident: Identity, limits: Limits) -> dict:
    """Become the unprivileged worker; its /proc/self/status credentials."""
    libc = ctypes.CDLL(None, use_errno=True)

    def prctl(option: int, arg: int = 0, arg3: int = 0) -> int:
        rc = libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3),
                        ctypes.c_ulong(0), ctypes.c_ulong(0))
        return 0 if rc == 0 else ctypes.get_errno()

    root = os.geteuid() == 0
    try:
        if root:
            for cap in range(_last_cap() + 1):
                prctl(PR_CAPBSET_DROP, cap)
            os.setgroups([])
            os.setresgid(ident.gid, ident.gid, ident.gid)
            os.setresuid(ident.real, ident.uid, ident.real)
    except OSError as e:
        raise Refused(f"cannot become uid {ident.uid} gid {ident.gid}: {e.strerror} (the "
                      "handler needs CAP_SETUID, CAP_SETGID and CAP_SETPCAP)") from None
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _capset_none(libc)
    for option, arg in ((PR_SET_NO_NEW_PRIVS, 1), (PR_SET_DUMPABLE, 0)):
        rc = prctl(option, arg)
        if rc:
            raise Refused(f"prctl({option}, {arg}): {os.strerror(rc)}")
    status = own_status()
    status["Dumpable"] = str(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
    # the bounding set only limits what an execve could gain, which
    # no_new_privs rules out: dropped where CAP_SETPCAP allows, not required
    held = [c for c in CAPS if c != "CapBnd" and int(status.get(c, "1"), 16)]
    if held or status.get("NoNewPrivs") != "1" or status["Dumpable"] != "0":
        raise Refused(f"still privileged after dropping: {status}")
    for which, value, slack in ((resource.RLIMIT_AS, limits.memory, 0),
                                (resource.RLIMIT_CPU, limits.cpu, 1), (resource.RLIMIT_CORE, 0, 0)):
        _, hard = resource.getrlimit(which)
        top = value + slack if hard == resource.RLIM_INFINITY else min(value + slack, hard)
        resource.setrlimit(which, (min(value, top), top))  # at the soft CPU limit: SIGXCPU
    return status


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63


def _capset_none(libc) -> None:
    """Empty permitted, effective and inheritable sets (capset(2), v3)."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    if libc.capset(header, data) != 0:
        raise Refused(f"capset: {os.strerror(ctypes.get_errno())}")


def own_status() -> dict:
    with open("/proc/self/status") as f:
        pairs = (line.partition(":") for line in f)
        return {k: " ".join(v.split()) for k, _, v in pairs if k in STATUS_FIELDS}


def _parent(pid: int, r: int, limits: Limits, t0: float) -> Outcome:
    buf = bytearray()
    messages: dict = {}
    deadline = None
    error = None
    poll = select.poll()
    poll.register(r, select.POLLIN)
    while True:
        wait = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        if wait == 0 or not poll.poll(wait):
            error = (f"the worker did not finish within worker.timeout ({limits.timeout:g} s) "
                     "after the core arrived: killed")
            break
        chunk = os.read(r, 1 << 20)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_RESULT:
            error = f"the worker's answer exceeded {MAX_RESULT >> 20} MiB: killed"
            break
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            messages.update(_decode(line))
            if "arrived" in messages and deadline is None:
                deadline = time.monotonic() + limits.timeout
    if error:
        os.kill(pid, signal.SIGKILL)
    _, wstatus = os.waitpid(pid, 0)
    ms = round((time.monotonic() - t0) * 1000, 3)
    result = messages.get("result")
    arrived, status = "arrived" in messages, messages.get("status", {})
    if error is None and isinstance(result, dict) and os.waitstatus_to_exitcode(wstatus) == 0:
        return Outcome(result, None, ms, arrived, status)
    return Outcome(None, error or _death(wstatus, messages, limits), ms, arrived, status)


def _decode(line: bytes) -> dict:
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return {"garbled": True}
    return message if isinstance(message, dict) else {"garbled": True}


def _death(wstatus: int, messages: dict, limits: Limits) -> str:
    """Why a worker that ended gave no result."""
    code = os.waitstatus_to_exitcode(wstatus)
    if code == -signal.SIGXCPU:
        return f"the worker used up its CPU time (worker.cpu, {limits.cpu} s)"
    if code < 0:
        return f"the worker died of {signal.Signals(-code).name}" + (
            " (out of memory?)" if code == -signal.SIGKILL else "")
    if code == EXIT_MEMORY:
        return f"the worker ran out of memory (worker.memory, {limits.memory >> 20} MiB)"
    if "refused" in messages:
        return f"the worker refused to analyse with privileges: {messages['refused']}"
    if "bug" in messages:
        return f"internal error in the worker: {messages['bug']}"
    if "garbled" in messages or code == 0:
        return "the worker's answer was not a report"
    return f"the worker exited with status {code}"
