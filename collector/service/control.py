"""The service's control socket: one request per connection, a length-framed
JSON message each way, file descriptors alongside (SCM_RIGHTS).

- {"op": "command", "argv": [...], "env": {...}, "umask": N}: the service
  runs the command line (`attach`, `core FILE`) with its warm caches and
  delivers the report as the client, in the client's name. It answers
  {"started": true} when it begins (within START_TIMEOUT), and the client
  then sends {"op": "fds"} with its stdout, stderr and working directory
  (so that a service that never starts holds none of them: a pipe would
  not end); then the answer is {"exit": N}. For `core FILE` the answer
  {"started": true, "open": FILE} names the file and the client opens it
  itself, with its own permissions (the service opens no path a client
  names), and sends it as a fourth descriptor, or {"errno": N} if the open
  failed. Or at once {"exit": N, "stdout"/"stderr": text} (a usage error,
  --help), or {"local": true}: the client does it itself.
- {"op": "core", "kernel": {...}, "errors": [...]} with the core's pipe (and
  the kernel's pidfd, if any): the pipe handler hands its core over and the
  service answers {"taken": true} once a child of its own owns it.

The client side is imported by `attach` and the pipe handler before they
touch a target. It costs _socket, struct and _json only: the json and
socket modules (with re, enum and selectors) would cost 10 ms of a client
that is done in 40, so messages are encoded and decoded with json's
own C parts (collector/plainjson.py: plain values only).
Any other answer ({"error": CLASS, "message": TEXT} for a bad request)
means the client does the work itself.
"""
from __future__ import annotations

import _socket as socket
import os
import struct

from ..files import write_all
from ..plainjson import dumps, loads
from . import control_path

HEADER = struct.Struct("!I")
FD = struct.Struct("i")  # as SCM_RIGHTS carries them (array would import collections)
MAX_REQUEST = 64 << 10
MAX_ANSWER = 1 << 20
MAX_FDS = 4             # stdout, stderr, the directory and a core file
# how a client opens the core file it hands over, and `collector core` opens
# it in-process (collector/core.py): O_NONBLOCK, or a FIFO would hang the open
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
CONNECT_TIMEOUT = 1.0
# A command is answered {"started": true} once the service begins it: a
# service that is busy with another, stopped or hung leaves the client to do
# the work itself after START_TIMEOUT, rather than waiting out the answer's.
START_TIMEOUT = 3.0
ANSWER_TIMEOUT = 300.0  # seconds: the stop, symbolization and delivery (sinks, spool)
# The service serves attach requests one at a time, between the kernel's
# cores: a request that may take longer is done by the client itself.
MAX_STOP_TIMEOUT = 10.0
MAX_BUDGET = 30.0


class Unavailable(Exception):
    """No service answers there: the caller does the work itself."""


def send(sock, message: dict, fds: tuple[int, ...] = ()) -> None:
    body = dumps(message).encode()
    data = HEADER.pack(len(body)) + body
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] \
        if fds else []
    sent = sock.sendmsg([data], ancillary)
    if sent < len(data):  # not an empty send: the peer may have its answer and be gone
        sock.sendall(data[sent:])


def receive(sock, limit: int) -> tuple[dict, list[int]]:
    """One message and the fds that came with it, and not a byte of what
    follows it. Raises ValueError for a message that is not one (too long,
    not JSON, cut short)."""
    fds: list[int] = []
    space = socket.CMSG_SPACE(MAX_FDS * FD.size)
    head, ancillary, flags, _ = sock.recvmsg(HEADER.size, space)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(fd for fd, in FD.iter_unpack(payload[:len(payload) - len(payload) % FD.size]))
    if flags & socket.MSG_CTRUNC:
        _close(fds)
        raise ValueError("more descriptors than a request takes")
    try:
        (size,) = HEADER.unpack(_exactly(sock, HEADER.size, head))
        if size > limit:
            raise ValueError(f"a message of {size} bytes (at most {limit})")
        message = loads(_exactly(sock, size, b""))
        if not isinstance(message, dict):
            raise ValueError("the message is not a JSON object")
    except BaseException:
        _close(fds)
        raise
    return message, fds


def _exactly(sock, n: int, got: bytes) -> bytes:
    data = bytearray(got)
    while len(data) < n:
        chunk = sock.recv(min(n - len(data), 1 << 20))
        if not chunk:
            raise ValueError("the message was cut short")
        data += chunk
    return bytes(data)


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    fds.clear()


def ask(where: str, message: dict, fds: tuple[int, ...] = (), timeout: float | None = None,
        then: float | None = None, follow=None) -> dict:
    """The service's answer; Unavailable if it cannot be asked. Once the
    service says {"started": true} within `timeout`, `follow(that answer)`
    (a message and its fds) is sent, and the answer may take `then`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(where)
        except OSError as e:
            raise Unavailable(f"{where}: {e.strerror or e}") from None
        sock.settimeout(timeout)
        try:
            send(sock, message, fds)
            answer, extra = receive(sock, MAX_ANSWER)
            if follow is not None and answer.get("started") is True and not extra:
                send(sock, *follow(answer))
                sock.settimeout(then)
                answer, extra = receive(sock, MAX_ANSWER)
        except (OSError, ValueError) as e:
            raise Unavailable(f"{where}: no answer: {e}") from None
        _close(extra)
        return answer
    finally:
        sock.close()


def forward(where: str, argv: list[str]) -> int | None:
    """This command line's exit status, run by the service at `where` with
    this process's stdout, stderr, working directory, environment and
    umask (and the core file it names, opened here); None when no service
    answers or it says to do it here."""
    mask = os.umask(0o077)
    os.umask(mask)
    try:
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    opened: list[int] = []

    def follow(started: dict) -> tuple[dict, tuple[int, ...]]:
        message, path = {"op": "fds"}, started.get("open")
        if isinstance(path, str):
            try:
                opened.append(os.open(path, OPEN_FLAGS))
            except OSError as e:
                message["errno"] = e.errno
        return message, (1, 2, cwd, *opened)

    try:
        answer = ask(where, {"op": "command", "argv": argv, "env": dict(os.environ),
                             "umask": mask}, timeout=START_TIMEOUT, then=ANSWER_TIMEOUT,
                     follow=follow)
    except Unavailable:
        return None
    finally:
        _close([cwd, *opened])
    code = answer.get("exit")
    if isinstance(code, bool) or not isinstance(code, int):
        return None
    for fd, key in ((1, "stdout"), (2, "stderr")):
        _write(fd, answer.get(key))
    return code


def _write(fd: int, text) -> None:
    try:
        write_all(fd, text.encode(errors="replace") if isinstance(text, str) else b"")
    except OSError:
        pass


def hand_off(kernel: dict, errors: list[str]) -> bool:
    """The pipe handler's core (stdin) and the kernel's pidfd, handed to the
    service; True once a child of the service owns them. No answer (no
    service, or it died first) leaves the core unread, to the handler."""
    where = control_path()
    if where is None:
        return False
    pidfd = kernel.get("F")
    fds = [0]
    try:
        if isinstance(pidfd, int) and pidfd > 2:
            os.fstat(pidfd)
            fds.append(pidfd)
    except OSError:
        pass
    try:
        answer = ask(where, {"op": "core", "kernel": kernel, "errors": errors}, tuple(fds))
    except Unavailable:
        return False
    return answer.get("taken") is True
