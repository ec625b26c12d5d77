"""The service for core_pattern '@PATH' (Linux 6.16+). The kernel connects
to this AF_UNIX stream socket as the crashing task and writes its core;
each connection is handled as in pipe mode, in a child process, at most
--jobs at a time. Connections beyond that wait in the listen backlog (and
beyond the backlog the kernel drops the core): a crash storm costs at most
--jobs handlers' memory.
"""
from __future__ import annotations

import os
import resource
import signal
import socket
import struct
import sys
import time

from ..errors import HandlerError
from ..targets import procfs
from . import request
from .kernel import handle_kernel_core, preload

SO_PEERPIDFD = 77           # Linux 6.5+, not in Python's socket module
LISTEN_FDS_START = 3        # sd_listen_fds(3)
BACKLOG = 64


class Shutdown(Exception):
    pass


def log(message: str) -> None:
    print(f"collector serve: {message}", file=sys.stderr, flush=True)


def listening_socket(path: str | None) -> socket.socket:
    """The socket systemd passed (socket activation), else one bound at `path`."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        sock = socket.socket(fileno=LISTEN_FDS_START)
        os.set_inheritable(sock.fileno(), False)
        return sock
    if path is None:
        raise HandlerError("give --socket PATH (or start from a systemd socket unit)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _remove_stale(path)
        old = os.umask(0o177)  # only root may connect; the kernel connects regardless
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise HandlerError(f"cannot listen on {path}: {e.strerror or e}") from None
    return sock


def _remove_stale(path: str) -> None:
    """A socket file nobody listens on is left over from a previous run."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise HandlerError(f"{path} is in use by another server")


def peer(conn: socket.socket) -> tuple[int, int, int, int | None]:
    """(pid, uid, gid, pidfd or None) of the crashing task."""
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    try:
        pidfd = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        pidfd = None
    return pid, uid, gid, pidfd


def handle(conn: socket.socket, args) -> None:
    pid, uid, gid, pidfd = peer(conn)
    if procfs.status_field(pid, "CoreDumping") != "1":
        log(f"refused a connection from pid {pid}: not a process dumping core")
        return
    kernel = {"P": pid, "u": uid, "g": gid, "t": int(time.time())}
    try:
        decision, head, mode = request.first(conn, pid, args.outlet.config, args.idle_timeout)
    except (request.RequestError, OSError) as e:
        log(f"pid {pid}: no core: {e}")
        return
    if decision is not None and not decision.admitted:
        log(f"pid {pid}: suppressed by storm control before the analysis "
            f"({'declined' if mode == 'request' else 'connection closed'}; {decision.key}; "
            f"cpu_ms={_cpu_ms():.1f})")
        return
    report = handle_kernel_core(conn.fileno(), kernel, [], args, pidfd, head)
    where = args.outlet.emit(report, symbolize=False, early=decision)
    log(f"pid {pid}: report sent to {where} ({mode} mode; cpu_ms={_cpu_ms():.1f})")


def _cpu_ms() -> float:
    """CPU time of this connection's handler (a child of the server) and its worker."""
    ru = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(r.ru_utime + r.ru_stime for r in ru) * 1000


def serve(args) -> None:
    sock = listening_socket(args.socket)
    preload()  # once, for every handler and worker forked from here
    busy: set[int] = set()

    def stop(signum, frame):
        raise Shutdown()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, stop)
    log(f"listening (at most {args.jobs} cores at a time)")
    try:
        while True:
            _reap(busy, block=len(busy) >= args.jobs)
            if len(busy) >= args.jobs:
                continue
            conn, _ = sock.accept()
            child = os.fork()
            if child == 0:
                _child(sock, conn, args)
            conn.close()
            busy.add(child)
            log(f"handling a core ({len(busy)} busy)")
    except Shutdown:
        log(f"stopping: waiting for {len(busy)} handlers")
    finally:
        sock.close()
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        while busy:
            _reap(busy, block=True)


def _child(sock: socket.socket, conn: socket.socket, args) -> None:
    """Handle one connection and exit, never returning into the server loop."""
    code = 0
    try:
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_DFL)
        sock.close()
        handle(conn, args)
    except BaseException as e:  # the child must not run the parent's loop
        log(f"internal error: {type(e).__name__}: {e}")
        code = 1
    finally:
        os._exit(code)


def _reap(busy: set[int], block: bool) -> None:
    while busy:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            busy.clear()
            return
        if pid == 0:
            return
        busy.discard(pid)
        block = False

