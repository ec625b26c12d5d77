"""The resident worker: a long-lived child of the service that takes and
delivers root's `attach` requests itself, one at a time.

A child forked for each request pays the fork (4 ms here from the call to
its first step) and copies on write the ~1,700 pages its delivery touches
(another ~5 ms in this VM); this one has copied them once, at its first
request. Only for root asking a root service: delivering as the client
then changes no ids, and what it does change (directory, umask,
environment, stdout, stderr) is put back after each request. A request
it cannot take (busy, gone) goes the forked way; if it dies, the service
starts another (not more than once a second), and a client it leaves
without an answer does the work itself."""
from __future__ import annotations

import gc
import os
import socket
import time

from . import clients, control

RESPAWN = 1.0  # seconds between starts of a worker that keeps dying


def wanted(asker, args) -> bool:
    return args.command == "attach" and asker.uid == 0 and os.geteuid() == 0


class Resident:
    """The service's side: the worker's pid, its socket and whether it is free."""

    def __init__(self, spawn):
        self.spawn = spawn  # (work) -> pid of a child running work(), the parent's fds closed
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.idle = False
        self.taking = False  # between a request handed over and its report taken
        self.started = 0.0

    def start(self, serve_one) -> None:
        """A new worker, running serve_one(conn, message, fds, taken) per
        request (taken(): tell the service the report is taken)."""
        if self.sock is not None or time.monotonic() - self.started < RESPAWN:
            return
        self.started = time.monotonic()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.pid = self.spawn(lambda: _loop(theirs, serve_one), ours.fileno())
        except OSError:
            ours.close()
            return
        finally:
            theirs.close()
        self.sock, self.idle = ours, True

    def hand(self, conn: socket.socket, message: dict, fds: list[int]) -> bool:
        """True once the worker has the request (the client's connection and
        streams go with it: the caller closes its own copies)."""
        if self.sock is None or not self.idle:
            return False
        try:
            control.send(self.sock, message, (conn.fileno(), *fds))
        except OSError:
            self.stop()
            return False
        self.idle, self.taking = False, True
        return True

    def heard(self) -> None:
        """Its socket is readable: the report is taken (the target let go),
        the request is done, or the worker is gone."""
        try:
            said, extra = control.receive(self.sock, control.MAX_ANSWER)
            for fd in extra:
                os.close(fd)
        except (OSError, ValueError):
            self.stop()
            return
        self.taking = False
        self.idle = said.get("idle") is True

    def stop(self) -> None:
        """Forget the worker: it ends once it finds its socket closed (the
        service reaps it with its other children)."""
        if self.sock is not None:
            self.sock.close()
        self.sock, self.idle, self.taking, self.pid = None, False, False, None


def _loop(sock: socket.socket, serve_one) -> None:
    """In the worker: requests until the service closes its end."""
    gc.enable()  # long-lived: its own pages now, and cycles must go
    while True:
        try:
            message, fds = control.receive(sock, control.MAX_REQUEST)
        except (OSError, ValueError):
            return
        if not fds:
            return
        conn = socket.socket(fileno=fds[0])
        client = fds[1:]
        try:
            with _AsFound():
                serve_one(conn, message, client, lambda: control.send(sock, {"taken": True}))
        finally:
            conn.close()
            for fd in client:
                if fd >= 0:
                    os.close(fd)
        control.send(sock, {"idle": True})


class _AsFound:
    """The worker's directory, umask, environment, stdout and stderr,
    put back however the request ended."""

    def __enter__(self):
        self.cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.mask = os.umask(0o077)
        os.umask(self.mask)
        self.env = dict(os.environ)
        self.out, self.err = os.dup(1), os.dup(2)
        return self

    def __exit__(self, *exc) -> None:
        os.dup2(self.out, 1)
        os.dup2(self.err, 2)
        os.fchdir(self.cwd)
        os.umask(self.mask)
        os.environ.clear()
        os.environ.update(self.env)
        for fd in (self.cwd, self.out, self.err):
            os.close(fd)


def serve_attach(service, deliver, log):
    """serve_one for root's attach: the take and the delivery, here."""
    def serve_one(conn: socket.socket, message: dict, fds: list[int], taken) -> None:
        asker = clients.peer(conn)
        args, answer = clients.command_args(message, service.cli.parser)
        if args is not None:
            report, answer = service.take(args, asker)
        taken()  # the service may take the next one meanwhile
        if answer is not None:
            service.answer(conn, answer)
            return
        log(f"pid {args.pid}: report for pid {asker.pid} (uid {asker.uid}), resident worker")
        deliver(conn, asker, args, message, fds, report, service.cli.run)
    return serve_one
