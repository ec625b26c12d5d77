"""The resident crash service, `collector serve`.

- On the kernel's socket (core_pattern '@PATH', Linux 6.16+, or '@@PATH',
  6.17+, where the kernel first asks whether to dump: request.py) the
  kernel connects as the crashing task and writes its core; each
  connection is handled in a child process, at most --jobs at a time,
  storm control deciding first (early.py).
  Connections beyond that wait in the listen backlog (and beyond the
  backlog the kernel drops the core): a storm costs at most --jobs
  handlers' memory.
- On the control socket (clients.py) `collector attach` and `collector
  core FILE` hand over their command line (and the core file, opened by
  the client): the service makes the report itself with its warm caches
  (a core file in the child that becomes the client),
  one at a time, and a child that becomes the client (its ids, directory,
  environment, stdout and stderr) delivers it as the client's own (root's
  `attach`: the resident worker takes and delivers it, resident.py); and
  a pipe handler hands over its core, which then waits for a job like a
  socket's.
Children are forked from the warm parent (imports done, caches filled) and
finish on their own if the parent dies.
"""
from __future__ import annotations

import collections
import gc
import os
import resource
import select
import signal
import socket
import sys
import time

from ..errors import CollectorError, HandlerError
from ..targets import procfs
from . import CONTROL, CONTROL_ENV, clients, control, pipe, request, resident
from .kernel import handle_kernel_core, preload

SO_PEERPIDFD = 77           # Linux 6.5+, not in Python's socket module
LISTEN_FDS_START = 3        # sd_listen_fds(3)
BACKLOG = 64
REQUEST_TIMEOUT = 2.0       # seconds a client has to send its request
MAX_READING = 64            # clients yet to send their request; more wait in the backlog
MAX_WAITING = 256           # handed-over cores waiting for a job
# seconds of quiet the service waits itself for a handed core's first
# notes (storm control's key); a slower one is decided by its child
EARLY_TIMEOUT = 0.5


class Shutdown(Exception):
    pass


def log(message: str) -> None:
    print(f"collector serve: {message}", file=sys.stderr, flush=True)


def listeners(core: str | None, ctl: str | None) -> dict[str, socket.socket]:
    """{"core": ..., "control": ...}: the sockets systemd passed (socket
    activation, named by FileDescriptorName=; a single unnamed one is the
    kernel's), else those bound at the paths given."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()):
        count = int(os.environ.get("LISTEN_FDS", "0") or 0)
        names = os.environ.get("LISTEN_FDNAMES", "").split(":")
        out = {}
        for i in range(count):
            name = names[i] if i < len(names) and names[i] in ("core", "control") else "core"
            out[name] = socket.socket(fileno=LISTEN_FDS_START + i)
            os.set_inheritable(out[name].fileno(), False)
        if out:
            return out
    out = {}
    try:
        if core is not None:
            out["core"] = bound(core, 0o177)  # only root may connect; the kernel regardless
        if ctl:
            os.makedirs(os.path.dirname(ctl) or ".", mode=0o755, exist_ok=True)
            out["control"] = bound(ctl, 0o111)  # anyone: each asker's credentials decide
    except BaseException:
        for sock in out.values():
            sock.close()
        raise
    if not out:
        raise HandlerError("give --socket PATH or --control PATH (or start from a systemd "
                           "socket unit)")
    return out


def bound(path: str, umask: int) -> socket.socket:
    """A socket listening at `path`. It is bound under another name and
    renamed into place once it listens: a crash (or a client) that finds
    the path always finds someone listening, never ECONNREFUSED."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    new = f"{path}.{os.getpid()}.new"
    try:
        _remove_stale(path)
        _unlink(new)
        old = os.umask(umask)
        try:
            sock.bind(new)
        finally:
            os.umask(old)
        sock.listen(BACKLOG)
        os.rename(new, path)
    except OSError as e:
        sock.close()
        _unlink(new)
        raise HandlerError(f"cannot listen on {path}: {e.strerror or e}") from None
    except BaseException:
        sock.close()
        _unlink(new)
        raise
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
    who = clients.peer(conn)
    try:
        pidfd = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        pidfd = None
    return who.pid, who.uid, who.gid, pidfd


def handle(conn: socket.socket, args) -> None:
    """A connection of the kernel's, '@' or '@@': storm control first."""
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
    report_core(conn.fileno(), kernel, [], args, pidfd, decision, head, mode)


def handle_handed(fd: int, kernel: dict, errors: list[str], args, pidfd: int | None,
                  early: tuple) -> None:
    """A core a pipe handler handed over, admitted by storm control's first
    look (Service.first_look: the decision, the bytes read for it), or not
    decided there: then by its notes, read on here (a slow core's), or by
    the fingerprint after the analysis."""
    decision, head = early
    if decision is None:  # e.g. notes slower than the first look waited for
        decision, head = pipe.look(fd, args.outlet.config, args.idle_timeout, head=head)
    report_core(fd, kernel, errors, args, pidfd, decision, head, "pipe")


def report_core(fd: int, kernel: dict, errors: list[str], args, pidfd: int | None,
                decision, head: bytes, mode: str) -> None:
    pid = kernel.get("P")
    if decision is not None and not decision.admitted:
        log(f"pid {pid}: suppressed by storm control before the analysis "
            f"({'declined' if mode == 'request' else 'connection closed'}; {decision.key}; "
            f"cpu_ms={_cpu_ms():.1f})")
        return
    report = handle_kernel_core(fd, kernel, errors, args, pidfd, head)
    where = args.outlet.emit(report, symbolize=False, early=decision)
    log(f"pid {pid}: report sent to {where} ({mode} mode; cpu_ms={_cpu_ms():.1f})")


def _cpu_ms() -> float:
    """CPU time of this core's handler (a child of the server) and its worker."""
    ru = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(r.ru_utime + r.ru_stime for r in ru) * 1000


class Service:
    def __init__(self, args, socks: dict[str, socket.socket], cli):
        self.args, self.socks, self.cli = args, socks, cli  # cli: parser() and run()
        self.busy: set[int] = set()
        # (conn, kernel, errors, fd, pidfd, the first look's (decision, head))
        self.waiting: collections.deque = collections.deque()
        self.reading: dict[socket.socket, float] = {}  # clients yet to send: -> deadline
        self.resident = resident.Resident(self.spawn)  # root's attach requests
        # attach requests waiting for the worker's take: (conn, message, asker, args, fds, said)
        self.held: collections.deque = collections.deque()

    def run(self) -> None:
        core, ctl = self.socks.get("core"), self.socks.get("control")
        wake, alarm = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake poll, through `alarm`
        signal.set_wakeup_fd(alarm)
        # root's attach requests, when there is a control socket (a dead worker is replaced)
        serve_one = resident.serve_attach(self, _deliver, log) \
            if ctl is not None and os.geteuid() == 0 else None
        while True:
            self.reap()
            if serve_one is not None:
                self.resident.start(serve_one)
            while self.waiting and len(self.busy) < self.args.jobs:
                self.start_handed(*self.waiting.popleft())
            free = len(self.busy) < self.args.jobs
            watch = {s.fileno(): s for s in (ctl, core if free else None, *self.reading,
                                             self.resident.sock)
                     if s is not None}
            poll = select.poll()
            for fd in (*watch, wake):
                poll.register(fd, select.POLLIN)
            now = time.monotonic()
            wait = min(self.reading.values(), default=None)
            ready = {fd for fd, _ in poll.poll(None if wait is None
                                               else max(0, int((wait - now) * 1000)) + 1)}
            if wake in ready:
                _drain(wake)
            if self.resident.sock is not None and self.resident.sock.fileno() in ready:
                self.resident.heard()
            self.release_held()  # the worker's take is over (or the worker gone)
            if core is not None and core.fileno() in ready:
                conn, _ = core.accept()
                self.fork(lambda: handle(conn, self.args))
                conn.close()
            for conn in [c for c in self.reading if c.fileno() in ready or
                         self.reading[c] <= time.monotonic()]:
                self.read(conn)
            if ctl is not None and ctl.fileno() in ready and len(self.reading) < MAX_READING:
                conn, _ = ctl.accept()
                self.reading[conn] = time.monotonic() + REQUEST_TIMEOUT

    def read(self, conn: socket.socket) -> None:
        """A client's request, once it has all arrived (or its time is up):
        a client that sends slowly or not at all holds up no one else."""
        try:
            data = conn.recv(control.HEADER.size + control.MAX_REQUEST,
                             socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            data = None
        except OSError:
            data = b""
        head = control.HEADER.size
        if data is None or 0 < len(data) < head:
            complete = False
        elif not data:  # it hung up
            complete = True
        else:
            size = control.HEADER.unpack_from(data)[0]
            complete = size > control.MAX_REQUEST or len(data) >= head + size
        if complete:
            del self.reading[conn]
            self.request(conn)  # one cut short (the client hung up) is answered as a bad one
        elif self.reading[conn] <= time.monotonic():
            del self.reading[conn]
            log("a bad request: none within the request timeout")
            self.answer(conn, {"error": "HandlerError", "message": "a bad request: none within "
                               f"{REQUEST_TIMEOUT:g} s"})

    def request(self, conn: socket.socket) -> None:
        """One control request. A command is answered here or by the child
        that delivers its report; a core is kept (with the connection,
        answered once a child owns it)."""
        fds: list[int] = []
        try:
            conn.settimeout(REQUEST_TIMEOUT)
            asker = clients.peer(conn)
            message, fds = control.receive(conn, control.MAX_REQUEST)
            if message.get("op") == "core":
                kernel, said, fd, pidfd = clients.core_request(message, fds, asker)
                if len(self.waiting) >= MAX_WAITING:  # before a byte of its pipe is read
                    raise HandlerError("too many cores waiting: the handler keeps its own")
                fds = []  # its pipe is read from here on: no error goes back to the handler
                answer = self.first_look(conn, kernel, said, fd, pidfd)
                if answer is None:  # it waits for a job, with its connection
                    return
            else:
                if message.get("op") != "command":
                    raise HandlerError(f"no such request: {str(message.get('op'))[:40]!r}")
                if fds:
                    raise HandlerError("a command comes without descriptors, then sends them")
                answer = self.command(conn, message, asker)
                if answer is None:  # answered by a child of ours, or later
                    return
        except (OSError, ValueError) as e:
            log(f"a bad request: {e}")
            answer = {"error": "HandlerError", "message": f"a bad request: {e}"}
        except CollectorError as e:
            answer = {"error": type(e).__name__, "message": str(e)}
        finally:
            for fd in fds:
                os.close(fd)
        self.answer(conn, answer)

    def command(self, conn: socket.socket, message: dict, asker) -> dict | None:
        """A client's `attach`: the report made here, with the warm caches
        (one at a time), then delivered by a child that becomes the client
        and answers it (None); or the answer to send. A `core FILE`: read
        with the warm caches by that child, as the client. The client's
        stdout, stderr and directory (and the core file it opened) come
        only once it is told the command started: a service that never
        starts it holds none of them. An `attach` that comes while the
        resident worker takes a report waits for that take to end (None):
        two takes at once could ask for the same process."""
        args, answer = clients.command_args(message, self.cli.parser)
        if args is None:
            return answer
        control.send(conn, clients.started(args))  # an OSError: a client gone, a bad request
        fds, said = clients.command_fds(conn, args)  # sent at once: read before any answer can be
        if args.command == "attach" and self.resident.taking and len(self.held) < MAX_READING:
            self.held.append((conn, message, asker, args, fds, said))
            return None
        return self.dispatch(conn, message, asker, args, fds, said)

    def dispatch(self, conn, message: dict, asker, args, fds: list[int], said: dict) -> dict | None:
        """A started command's work; it owns `fds` (and `conn` when it
        returns None)."""
        try:
            report = None
            if args.command == "core":
                args.func = clients.core_reader(args, asker, fds, said, self.args.outlet,
                                                self.args.service["cache_images"])
                if args.func is None:
                    return {"local": True}
                log(f"core {args.file_or_specs[0]}: read for pid {asker.pid} (uid {asker.uid})")
            elif resident.wanted(asker, args) and self.resident.hand(conn, message, fds):
                log(f"pid {args.pid}: handed to the resident worker")
                conn.close()
                return None
            else:
                report, answer = self.take(args, asker)
                if answer is not None:
                    return answer
                log(f"pid {args.pid}: report for pid {asker.pid} (uid {asker.uid})")
            self.fork(lambda: _deliver(conn, asker, args, message, fds, report, self.cli.run),
                      what="a client")
            conn.close()
            return None
        finally:
            for fd in fds:
                os.close(fd)

    def release_held(self) -> None:
        """The attach requests that waited for the worker's take, in turn."""
        while self.held and not self.resident.taking:
            conn = self.held[0][0]
            try:
                answer = self.dispatch(*self.held.popleft())
            except (OSError, ValueError) as e:
                log(f"a bad request: {e}")
                answer = {"error": "HandlerError", "message": f"a bad request: {e}"}
            if answer is not None:
                self.answer(conn, answer)

    def take(self, args, asker) -> tuple[dict | None, dict | None]:
        """(the report, None), or (None, the answer instead): an error said
        as the command would say it, or a bug in us (the client does it
        itself)."""
        s = self.args.service
        try:
            return clients.take_attach(args, asker, self.args.outlet, s["cache_images"]), None
        except CollectorError as e:
            return None, {"exit": e.exit_code, "stderr": f"collector: {e}\n"}
        except Exception as e:
            log(f"attach failed: internal error: {type(e).__name__}: {e}")
            return None, {"local": True}
        finally:
            if _rss() > s["cache_memory"]:
                self.args.outlet.images.begin(self.args.outlet.images.held // 2)

    @staticmethod
    def answer(conn: socket.socket | None, answer: dict) -> None:
        if conn is None:
            return
        try:
            conn.settimeout(REQUEST_TIMEOUT)
            control.send(conn, answer)
            _discard(conn)  # what it sent beyond its request: else it gets a reset, not the answer
        except OSError as e:
            log(f"could not answer a client: {e.strerror or e}")
        finally:
            conn.close()

    def first_look(self, conn, kernel: dict, errors: list[str], fd: int,
                   pidfd: int | None) -> dict | None:
        """Storm control decides on a handed core's first notes here, in the
        parent: a suppressed crash costs no fork (its pipe is closed, the
        kernel stops writing; the answer to send). Any other waits for a job
        with what was read (None: answered when a child owns it)."""
        cpu = time.process_time()
        try:
            decision, head = pipe.look(fd, self.args.outlet.config, EARLY_TIMEOUT)
        except Exception as e:  # a bug in us: its child reads on from where this stopped
            log(f"pid {kernel.get('P')}: storm control failed: {type(e).__name__}: {e}")
            decision, head = None, b""
        if decision is not None and not decision.admitted:
            for own in (fd, pidfd):
                if own is not None:
                    os.close(own)
            log(f"pid {kernel.get('P')}: suppressed by storm control before the analysis "
                f"(pipe closed; {decision.key}; "
                f"cpu_ms={(time.process_time() - cpu) * 1000:.1f})")
            return {"taken": True}
        self.waiting.append((conn, kernel, errors, fd, pidfd, (decision, head)))
        return None

    def start_handed(self, conn, kernel, errors, fd, pidfd, early) -> None:
        self.fork(lambda: handle_handed(fd, kernel, errors, self.args, pidfd, early),
                  conn.fileno())
        for own in (fd, pidfd):
            if own is not None:
                os.close(own)
        self.answer(conn, {"taken": True})

    def fork(self, work, *private: int, what: str = "a core") -> None:
        """Run `work` in a child, one of the jobs."""
        self.busy.add(self.spawn(work, *private))
        log(f"handling {what} ({len(self.busy)} busy)")

    def spawn(self, work, *private: int) -> int:
        """A child running `work`, which closes the fds that are the
        parent's (`private` and the sockets, the waiting cores but its own,
        the resident worker's socket)."""
        others = [x for conn, _, _, fd, pidfd, _ in self.waiting
                  for x in (conn.fileno(), fd, pidfd)]
        others += [conn.fileno() for conn in self.reading]
        if self.resident.sock is not None:
            others.append(self.resident.sock.fileno())
        sys.stdout.flush()  # nothing of ours may reach a client's stdout
        child = os.fork()
        if child == 0:
            _child(work, [*private, *(s.fileno() for s in self.socks.values()), *others])
        return child

    def reap(self, block: bool = False) -> None:
        """Children that are done (a resident worker that died too); with
        `block`, waits for one of the jobs first."""
        while not block or self.busy:
            try:
                pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                self.busy.clear()
                return
            if pid == 0:
                return
            self.busy.discard(pid)
            block = False


def serve(args, cli) -> None:
    ctl = args.control if args.control is not None else (os.environ.get(CONTROL_ENV)
                                                          or CONTROL)
    socks = listeners(args.socket, ctl)
    service = Service(args, socks, cli)
    preload()  # once, for every handler and worker forked from here
    clients.preload()
    warm(args.outlet.images)
    gc.freeze()  # what start-up made lives as long as the service: no collection looks at it

    def stop(signum, frame):
        raise Shutdown()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, stop)
    log(f"listening on {', '.join(sorted(service.socks))} (at most {args.jobs} cores at a time)")
    try:
        service.run()
    except Shutdown:
        log(f"stopping: waiting for {len(service.busy)} handlers")
    finally:
        ours = os.environ.get("LISTEN_PID") != str(os.getpid())  # else systemd's
        for name, sock in socks.items():
            sock.close()
            if ours:  # no stale socket left for clients to try
                _unlink(args.socket if name == "core" else ctl)
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        for conn, *_ in service.waiting:  # their handlers still have the cores
            conn.close()
        service.resident.stop()  # it ends after the request it may have
        for conn, *_, fds, _ in service.held:  # those clients do the work themselves
            conn.close()
            for fd in fds:
                os.close(fd)
        while service.busy:
            service.reap(block=True)


def warm(images) -> None:
    """The system libraries the service maps itself (libc, ld.so, libm...),
    which most crashes' stacks run through: their tables decoded and their
    DWARF inflated here, once, for every handler and worker forked."""
    try:
        mine = procfs.maps(os.getpid())
    except OSError:
        return
    for path in sorted({m.path for m in mine if m.executable and
                        m.path.startswith(("/lib/", "/usr/lib/")) and
                        os.path.basename(m.path).startswith(("lib", "ld-"))}):
        try:
            image = images.from_file(path, path)
            image.symbols
            if image.lines is not None:
                image.lines.inflate()
        except (OSError, ValueError):  # ElfError, LineError: a handler meets it again, if need be
            pass


def _deliver(conn: socket.socket, asker, args, message: dict, fds: list[int],
             report: dict | None, run) -> None:
    """The child that delivers a client's report (or makes it: a core file)
    as the client and tells it the exit status; one that cannot become the
    client tells it to do the work itself."""
    t0, own = time.monotonic(), os.dup(2)  # (fds: the client's; those closed here become -1)
    try:
        code = clients.deliver_as(asker, args, message, fds, report,
                                  lambda args, report: run(args, report, close=False))
    except OSError as e:
        log(f"cannot act as pid {asker.pid} (uid {asker.uid}): {e}")
        answer = {"local": True}
    else:
        answer = {"exit": code}
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    Service.answer(conn, answer)
    os.dup2(own, 2)  # the log goes to the service's stderr, not the client's
    os.close(own)
    if getattr(args, "outlet", None) is not None:
        # after the answer and with the client's streams let go (a reader of
        # its stdout waits for their end): the store's report is committed,
        # and the checkpoint its close makes (~half the store's time) is not the client's
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
        for i in (0, 1):
            os.close(fds[i])
            fds[i] = -1
        args.outlet.close()
    log(f"delivered for pid {asker.pid} in {(time.monotonic() - t0) * 1000:.1f} ms: {answer}")


def _child(work, close: list[int | None]) -> None:
    """Run `work` and exit, never returning into the server loop."""
    code = 0
    gc.disable()  # a collection would touch, and so copy, every page of the parent's objects
    try:
        signal.set_wakeup_fd(-1)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        for fd in close:
            if fd is not None:
                os.close(fd)
        work()
    except BaseException as e:  # the child must not run the parent's loop
        log(f"internal error: {type(e).__name__}: {e}")
        code = 1
    finally:
        os._exit(code)


def _discard(conn: socket.socket, most: int = 16) -> None:
    try:
        for _ in range(most):
            if not conn.recv(1 << 16, socket.MSG_DONTWAIT):
                return
    except OSError:
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
