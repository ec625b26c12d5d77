"""What the service does for a client of its control socket (control.py
has the protocol): run its `attach` or `core FILE` with the warm caches
and deliver the report as the client, or take over a core a pipe handler
was given. Each asker is known by its peer credentials (SO_PEERCRED) and
may ask only what it could do itself: a core file is the descriptor it
opened, read in a child that has become the client."""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import signal
import socket
import struct
from dataclasses import dataclass

from .. import errors
from ..attach import build, capture
from ..core import cannot_open, from_file, named
from ..targets import live, procfs
from . import control

YAMA = "/proc/sys/kernel/yama/ptrace_scope"
MAX_ANCESTORS = 4096
MAX_ARGS = 256
# What a client's command imports (cli.main in the delivering child):
# imported by the service, before any fork, so that each child starts warm.
CLIENT_MODULES = ("collector.commands.attach", "collector.commands.core",
                  "collector.delivery.deliver",
                  "collector.delivery.sinks.stdout", "collector.text", "collector.logging",
                  "structlog", "tomllib")


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


@contextlib.contextmanager
def _held_pid(pid: int):
    """Yields same(): True while the process `pid` named at the start still
    lives, so that the pid cannot have passed to another process (one the
    asker may not trace) between the credential check and the capture.
    None where the kernel has no pidfds."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise errors.NoSuchProcess(f"pid {pid} exited") from None
    except OSError:
        yield None
        return
    try:
        yield lambda: _alive(fd)
    finally:
        os.close(fd)


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
        return True
    except ProcessLookupError:
        return False


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


def preload() -> None:
    for name in CLIENT_MODULES:
        importlib.import_module(name)


def command_args(message: dict, parser):
    """(parsed arguments, None) of a command line the service runs itself
    (`parser`: cli.parser), or (None, the answer): the parser's own output
    and exit status (--help, a usage error), or {"local": true} for what the
    client does itself (not an attach, --no-service, a stop timeout or
    budget that would hold the service long). UsageError for a request
    that is not one."""
    argv, env, umask = message.get("argv"), message.get("env"), message.get("umask")
    if not isinstance(argv, list) or len(argv) > MAX_ARGS or \
            not all(isinstance(a, str) for a in argv):
        raise errors.UsageError("the request's argv is not a list of strings")
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k
            and "\0" not in k + v for k, v in env.items()):
        raise errors.UsageError("the request's env is not an environment")
    if isinstance(umask, bool) or not isinstance(umask, int) or not 0 <= umask <= 0o777:
        raise errors.UsageError("the request's umask is not one")
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser(argv).parse_args(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
        return None, {"exit": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
    if args.command not in ("attach", "core") or args.no_service or \
            args.symbolize_budget > control.MAX_BUDGET or (
                args.command == "attach" and args.stop_timeout > control.MAX_STOP_TIMEOUT) or (
                args.command == "core" and (args.from_kernel or len(args.file_or_specs) != 1)):
        return None, {"local": True}
    return args, None


def started(args) -> dict:
    """The answer once the service begins a command; for a core file, the
    path the client is to open itself (its own permissions, its directory)."""
    if args.command == "core":
        return {"started": True, "open": named(args)}
    return {"started": True}


def command_fds(conn: socket.socket, args) -> tuple[list[int], dict]:
    """(the client's stdout, stderr and directory, and the core file it
    opened; its message), which it sends once told the command started
    (ValueError, OSError: a client that does not)."""
    message, fds = control.receive(conn, control.MAX_REQUEST)
    core = args.command == "core"
    if message.get("op") != "fds" or not (len(fds) == 3 or core and len(fds) == 4):
        for fd in fds:
            os.close(fd)
        raise ValueError("a command's descriptors are its stdout, stderr and directory "
                         "(and a core file)")
    return fds, message


def take_attach(args, asker: Peer, outlet, keep_images: int) -> dict:
    """The report of the process the asker named, symbolized: raises a
    CollectorError for what it may not or cannot have."""
    live.check_target(args.pid)
    with _held_pid(args.pid) if asker.uid != 0 else contextlib.nullcontext() as same:
        why = why_not_trace(asker, args.pid)
        if why:
            raise errors.NotPermitted(f"uid {asker.uid} may not trace pid {args.pid}: {why}")
        outlet.images.begin(keep_images)
        taken = capture(args.pid, args.stack_window, args.stop_timeout, args.freeze)
        if same is not None and not same():
            raise errors.NoSuchProcess(f"pid {args.pid} exited while it was being traced")
    report = build(taken, args.max_frames, outlet.images)
    report["timings"]["service"] = True
    outlet.symbolize(report, args.symbolize_budget)
    return report


def core_reader(args, asker: Peer, fds: list[int], said: dict, outlet, keep_images: int):
    """The command, in the child that becomes the client, that reads the
    core file it opened (fds[3]; `said`: why it could not) with the images
    this service keeps, as `collector core FILE` would in-process: the
    child reads as the client (its ids, directory, environment) what the
    core names, and what it learns dies with it, so no client's files,
    debug directories or links reach another's reports. None when this
    service cannot see the client's files as the client does (its mount
    namespace, its root): the client reads it itself."""
    if why_not_open(asker) is not None:
        return None
    path = named(args)
    code = said.get("errno")
    opened = fds[3] if len(fds) == 4 else None

    def read(args) -> dict:
        if opened is None:
            raise cannot_open(path, os.strerror(code) if type(code) is int else "not opened")
        outlet.images.begin(keep_images)
        report = from_file(os.dup(opened), path, args, outlet.images)
        report["timings"]["service"] = True
        outlet.symbolize(report, args.symbolize_budget)  # with the images it was unwound with
        args.outlet.budget = 0  # the client's outlet: symbolized already
        return report
    return read


def why_not_open(asker: Peer) -> str | None:
    """None if a path the asker names opens here the file it would open:
    the same mount namespace and root, and ids this service can take on."""
    if os.geteuid() not in (0, asker.uid):
        return f"the service runs as uid {os.geteuid()}"
    try:
        if os.readlink(f"/proc/{asker.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt"):
            return "the asking process is in another mount namespace"
        theirs, ours = os.stat(f"/proc/{asker.pid}/root"), os.stat("/")
    except OSError as e:
        return f"the asking process cannot be looked at: {e.strerror}"
    if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
        return "the asking process has another root directory"
    return None


def client_groups(asker: Peer) -> list[int]:
    status = procfs.status(asker.pid)
    if "Uid" not in status:
        raise OSError(f"the client (pid {asker.pid}) is gone")
    return [int(g) for g in status.get("Groups", "").split()]


def deliver_as(asker: Peer, args, message: dict, fds: list[int], report: dict | None,
               run) -> int:
    """In a child of the service: become the client (its ids, groups,
    directory, umask, environment, stdout and stderr), then deliver the
    report as the command there would (`run`: cli.run, with the command
    line `args` the service parsed; no report: the command makes it there,
    as the client); its exit status. Raises OSError if it cannot become the
    client: nothing is delivered, or read, as root."""
    stdout, stderr, cwd = fds[:3]
    if asker.uid != 0:
        os.setgroups(client_groups(asker))
        os.setresgid(asker.gid, asker.gid, asker.gid)
        os.setresuid(asker.uid, asker.uid, asker.uid)
    os.fchdir(cwd)
    os.umask(message["umask"])
    os.environ.clear()
    os.environ.update(message["env"])
    for fd, to in ((stdout, 1), (stderr, 2)):
        os.dup2(fd, to)
    return run(args, report)


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
