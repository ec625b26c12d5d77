"""What the service does for a client of its control socket (control.py
has the protocol): attach to a process with the warm caches, or take over a
core a pipe handler was given. Each asker is known by its peer credentials
(SO_PEERCRED) and may ask only what it could do itself."""
from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

from .. import errors
from ..attach import attach
from ..targets import DEFAULT_STACK_WINDOW, DEFAULT_STOP_TIMEOUT, live, procfs
from . import control

YAMA = "/proc/sys/kernel/yama/ptrace_scope"
MAX_ANCESTORS = 4096
# option -> (type, lowest, highest, default) an attach request may give;
# requests are served one at a time, between the kernel's cores: no client
# may hold the service for long
OPTIONS = {"stack_window": (int, 4096, 64 << 20, DEFAULT_STACK_WINDOW),
           "stop_timeout": (float, 0.001, control.MAX_STOP_TIMEOUT, DEFAULT_STOP_TIMEOUT),
           "max_frames": (int, 1, 1 << 24, None),
           "symbolize_budget": (float, 0.0, control.MAX_BUDGET, 0.0)}


@dataclass
class Peer:
    pid: int
    uid: int
    gid: int


def peer(conn: socket.socket) -> Peer:
    return Peer(*struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)))


def why_not_trace(asker: Peer, pid: int) -> str | None:
    """None if the asker could ptrace `pid` itself, else why not: as the
    kernel's ptrace_may_access decides, as far as /proc tells (the same real,
    effective, saved and fs ids, a dumpable target, Yama's scope)."""
    if asker.uid == 0:
        return None
    try:
        if os.readlink(f"/proc/{asker.pid}/ns/pid") != os.readlink("/proc/self/ns/pid"):
            return "the asking process is in another pid namespace (use --no-service)"
    except OSError:
        return "the asking process is gone"
    status = procfs.status(pid)
    for key, want in (("Uid", asker.uid), ("Gid", asker.gid)):
        ids = status.get(key, "").split()
        if not ids or any(i != str(want) for i in ids):
            return f"pid {pid} runs as another user"
    try:
        if os.stat(f"/proc/{pid}").st_uid != asker.uid:
            return f"pid {pid} is not dumpable (it changed credentials, or asked not to be traced)"
    except OSError:
        return f"pid {pid} is gone"
    scope = _yama()
    if scope >= 2:
        return f"Yama's ptrace_scope is {scope}: only root may trace"
    if scope == 1 and not _descends(pid, asker.pid):
        return f"Yama's ptrace_scope is 1 and pid {pid} does not descend from the asking process"
    return None


def _yama() -> int:
    try:
        with open(YAMA) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _descends(pid: int, ancestor: int) -> bool:
    for _ in range(MAX_ANCESTORS):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            pid = int(procfs.stat_fields(pid)[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def options(given) -> dict:
    """The attach options of a request, each checked; UsageError if one is not."""
    if not isinstance(given, dict):
        raise errors.UsageError("the request's options are not an object")
    out = {"freeze": given.get("freeze") is True}
    for name, (kind, low, high, default) in OPTIONS.items():
        value = given.get(name, default)
        if value is None and default is None:
            out[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not low <= value <= high or (kind is int and not isinstance(value, int)):
            raise errors.UsageError(f"the request's {name} is not a {kind.__name__} "
                                    f"from {low} to {high}: {value!r}")
        out[name] = kind(value)
    return out


def take_attach(message: dict, asker: Peer, outlet, keep_images: int) -> dict:
    """The report of the process the asker named: raises a CollectorError
    (the client raises it again) for what it may not or cannot have."""
    pid = message.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise errors.UsageError(f"not a pid: {pid!r}")
    opts = options(message.get("options", {}))
    budget = opts.pop("symbolize_budget")
    live.check_target(pid)
    why = why_not_trace(asker, pid)
    if why:
        raise errors.NotPermitted(f"uid {asker.uid} may not trace pid {pid}: {why}")
    outlet.images.begin(keep_images)
    report = attach(pid, images=outlet.images, **opts)
    report["timings"]["service"] = True
    outlet.symbolize(report, budget)
    return report


def core_request(message: dict, fds: list[int], asker: Peer) -> tuple[dict, list[str], int, int | None]:
    """(kernel's values, errors, core fd, pidfd or None) of a core a pipe
    handler hands over; UsageError / NotPermitted for one the service must
    not take (only root's handler, the kernel's, may hand one over)."""
    if asker.uid != 0:
        raise errors.NotPermitted("only root (the kernel's core_pattern handler) may hand "
                                  "over a core")
    kernel, said = message.get("kernel"), message.get("errors", [])
    if not isinstance(kernel, dict) or not all(isinstance(k, str) and len(k) == 1 and
                                               isinstance(v, (int, str)) and
                                               not isinstance(v, bool)
                                               for k, v in kernel.items()):
        raise errors.UsageError("the request's kernel values are not LETTER: value pairs")
    if not isinstance(said, list) or not all(isinstance(e, str) for e in said):
        raise errors.UsageError("the request's errors are not a list of strings")
    if not 1 <= len(fds) <= 2:
        raise errors.UsageError("a core comes with its pipe (and the kernel's pidfd)")
    if not isinstance(kernel.get("P"), int) or \
            procfs.status_field(kernel["P"], "CoreDumping") != "1":
        raise errors.UsageError(f"pid {kernel.get('P')} is not dumping core")
    kernel = {k: v for k, v in kernel.items() if k != "F"}  # its pidfd is ours now
    return kernel, said, fds[0], fds[1] if len(fds) == 2 else None
