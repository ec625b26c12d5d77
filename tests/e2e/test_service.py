"""The resident service's control socket: `attach` through it (and its
credential check), the fallback when no service answers, the pipe handler
handing its core over, a service killed with cores in flight, and the resident worker."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from collector.service import control
from collector.service.pipe import KERNEL_ARGS

from .corepattern import (_core_limit, can_own, crash, crashed_thread, handler_script,
                          owned_core_pattern, short_tempdir, wait_report)
from .helpers import NOBODY, assert_chain, collector_argv, collector_env, names, run_command
from .receivers import stop
from .test_core_socket import kernel_has_socket_mode, socket_activate

# A client that is not root: Python and the modules a refused attach needs
# are loaded as root (nobody may not read this interpreter's files), then
# the process becomes nobody before it connects (SO_PEERCRED says who
# connected, not who started).
NOBODY_CLIENT = f"""
import os, signal, sys
import collector.__main__, collector.service.control, collector.service.pipe
os.setgroups([])
os.setresgid({NOBODY}, {NOBODY}, {NOBODY})
os.setresuid({NOBODY}, {NOBODY}, {NOBODY})
os.umask(0o027)
sys.exit(collector.__main__.main())
"""


class Service:
    def __init__(self, proc: subprocess.Popen, control, log):
        self.proc, self.control, self.log = proc, control, log

    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def service():
    """start(*args, control=PATH) -> Service: `collector serve` on the
    session's control socket (where every collector the tests start looks),
    or on `control`; stopped at the end, however the test ended."""
    d = short_tempdir()
    started = []

    def start(*args, control=None) -> Service:
        control = control or os.environ["COLLECTOR_CONTROL"]
        log = d / f"serve-{len(started)}.log"
        proc = subprocess.Popen(collector_argv("serve", "--control", control, *args),
                                stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                                env=collector_env(), start_new_session=True)
        started.append(proc)
        deadline = time.monotonic() + 30
        while "listening" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)
        return Service(proc, control, log)

    start.dir = d
    yield start
    for proc in started:
        stop(proc)
    shutil.rmtree(d, ignore_errors=True)


def frame_names(report: dict) -> dict[int, list[str]]:
    return {t["tid"]: names(t) for t in report["threads"]}


def test_attach_through_the_service(builder, spawn, service, collector):
    """The same backtrace as in-process, made by the service (twice: the
    second with its caches warm), and said so in the timings."""
    t = spawn(builder.build("chain.c"), "3")
    serving = service()
    first, again = collector("attach", t.pid), collector("attach", t.pid)
    alone = collector("attach", "--no-service", t.pid)
    for r in (first, again, alone):
        assert r.rc == 0, str(r)
    assert first.report["timings"].get("service") is True, serving.text() + first.stderr
    assert again.report["timings"].get("service") is True, serving.text() + again.stderr
    assert "service" not in alone.report["timings"]
    assert frame_names(first.report) == frame_names(again.report) == frame_names(alone.report)
    assert any("main" in n for n in frame_names(first.report).values())
    served = re.findall(rf"pid {t.pid}: report for pid (\d+)", serving.text())
    assert len(served) == 2, serving.text()
    # the text format is the client's: printed as in-process
    text = collector("attach", "--format", "text", t.pid)
    assert text.rc == 0 and f"PID {t.pid}" in text.stdout, str(text)
    # what the service says of a command line is said as in-process: exit status and one line
    gone = run_command(collector_argv("attach", "999999"))
    assert gone.rc == 3 and gone.stderr == "collector: no process with pid 999999\n", str(gone)
    bad = run_command(collector_argv("attach", "--bogus", t.pid))
    assert bad.rc == 2 and "unrecognized arguments: --bogus" in bad.stderr, str(bad)
    long = collector("attach", "--stop-timeout", "11", t.pid)  # would hold the service: done here
    assert long.rc == 0 and "service" not in long.report["timings"], str(long)
    assert len(re.findall(r"report for pid", serving.text())) == 3, serving.text()


def test_a_client_may_ask_only_for_what_it_could_trace(builder, spawn, service, world_dir):
    """nobody asking for root's process: refused with exit 4 and why; for
    nobody's own process: a report through the service."""
    serving = service()
    exe = world_dir / "chain"
    shutil.copy2(builder.build("chain.c"), exe)
    os.chmod(exe, 0o755)
    roots, nobodys = spawn(exe, "1"), spawn(exe, "1", user=NOBODY)
    client = [sys.executable, "-c", NOBODY_CLIENT, "attach"]
    refused = run_command([*client, str(roots.pid)])
    assert refused.rc == 4, str(refused)
    assert re.search(rf"uid {NOBODY} may not trace pid {roots.pid}: .*another user",
                     refused.stderr), refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    allowed = run_command([*client, str(nobodys.pid)])
    assert allowed.rc == 0, str(allowed)
    assert allowed.report["timings"].get("service") is True
    assert allowed.report["process"]["pid"] == nobodys.pid
    assert f"pid {nobodys.pid}: report for pid" in serving.text()
    assert f"pid {roots.pid}: report" not in serving.text()
    # delivered as the client, as its user: into its own store
    own = world_dir / "own"
    own.mkdir()
    os.chown(own, NOBODY, NOBODY)
    kept = run_command([*client, "--set", f'collector.state_dir="{own}/state"', str(nobodys.pid)])
    assert kept.rc == 0 and kept.report["timings"].get("service") is True, str(kept)
    db = own / "state" / "reports.db"
    assert db.stat().st_uid == NOBODY and db.stat().st_mode & 0o777 == 0o600


def test_attach_without_a_service(builder, spawn, tmp_path):
    """No socket, a socket file nobody listens on, a server that hangs up,
    one that never answers (a service stopped or hung): the attach is done
    in-process, as if there were no service, the last after START_TIMEOUT."""
    t = spawn(builder.build("chain.c"), "1")
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    servers, held = {}, []
    for name in ("rude", "mute"):
        servers[name] = socket.socket(socket.AF_UNIX)
        servers[name].bind(str(tmp_path / f"{name}.sock"))
        servers[name].listen(4)
    try:
        for where in (tmp_path / "none.sock", stale, tmp_path / "rude.sock",
                      tmp_path / "mute.sock", ""):
            env = dict(collector_env(), COLLECTOR_CONTROL=str(where))
            if where == tmp_path / "rude.sock":  # accepts, then closes unanswered
                threading.Thread(target=lambda: servers["rude"].accept()[0].close(),
                                 daemon=True).start()
            if where == tmp_path / "mute.sock":  # accepts, and keeps the client waiting
                threading.Thread(target=lambda: held.append(servers["mute"].accept()[0]),
                                 daemon=True).start()
            r = run_command(collector_argv("attach", t.pid), env=env)
            assert r.rc == 0, f"{where}: {r}"
            assert "service" not in r.report["timings"], where
            assert any("main" in n for n in frame_names(r.report).values())
            assert r.wall_s < control.START_TIMEOUT + 20, where
    finally:
        for sock in (*servers.values(), *held):
            sock.close()


def test_the_service_outlives_bad_clients(builder, spawn, service):
    """Garbage, a silent client, a forged core hand-over and an unknown
    request each get an answer or a closed connection; the service still
    serves the next attach."""
    t = spawn(builder.build("chain.c"), "1")
    serving = service()
    where = serving.control

    def talk(raw: bytes, fds=()) -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(where))
            if fds:
                s.sendmsg([raw], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   struct.pack(f"{len(fds)}i", *fds))])
            elif raw:
                s.sendall(raw)
            return b"".join(iter(lambda: s.recv(65536), b""))

    def message(obj) -> bytes:
        body = json.dumps(obj).encode()
        return struct.pack("!I", len(body)) + body

    assert b"bad request" in talk(b"\xff" * 64)
    with socket.socket(socket.AF_UNIX) as silent:  # holds up no one while it says nothing
        silent.connect(str(where))
        t0 = time.monotonic()
        quick = run_command(collector_argv("attach", t.pid),
                            env=dict(collector_env(), COLLECTOR_CONTROL=str(where)))
        assert quick.report["timings"].get("service") is True, serving.text()
        assert time.monotonic() - t0 < 1.9, "the attach waited for the silent client"
        silent.settimeout(10)
        assert b"none within" in b"".join(iter(lambda: silent.recv(65536), b""))
    assert b"no such request" in talk(message({"op": "format-disk"}))
    r, w = os.pipe()
    try:  # root may hand over a core, but only of a process that is dumping one
        assert b"not dumping core" in talk(message({"op": "core", "kernel": {"P": t.pid}}), (r,))
    finally:
        os.close(r)
        os.close(w)
    assert b"not a list of strings" in talk(message({"op": "command", "argv": [t.pid],
                                                     "env": {}, "umask": 0}))
    # started, but the client never sends its stdout, stderr and directory
    said = talk(message({"op": "command", "argv": ["attach", str(t.pid)], "env": {},
                         "umask": 0}))
    assert b'"started":true' in said and b"bad request" in said, said
    ok = run_command(collector_argv("attach", t.pid),
                     env=dict(collector_env(), COLLECTOR_CONTROL=str(where)))
    assert ok.rc == 0 and ok.report["timings"].get("service") is True, serving.text()
    assert serving.proc.poll() is None


@pytest.mark.skipif(can_own() is not None, reason=str(can_own()))
def test_the_pipe_handler_hands_its_core_to_the_service(builder, service):
    """core_pattern '|handler': the handler passes its stdin to the running
    service, which reports the crash; without the service (test_core_pipe)
    the handler does it itself."""
    exe = builder.build("core_crash.c", "O0-fp")
    d = service.dir
    reports = d / "r"
    reports.mkdir(mode=0o700)
    control = d / "control.sock"
    serving = service("--report-dir", reports, control=control)
    handler = handler_script(d, {"COLLECTOR_CONTROL": control})
    with owned_core_pattern(f"|{handler} core --from-kernel --report-dir {d}/own "
                            f"{KERNEL_ARGS}", pipe_limit=4):
        pid = crash([exe, "segv", 16])
        report, = wait_report(reports, [pid])
    assert not (d / "own").exists(), "the handler wrote a report of its own"
    assert f"pid {pid}: report sent to {reports}" in serving.text(), serving.text()
    assert report["source"] == "core" and report["signal"]["name"] == "SIGSEGV"
    assert report["core"]["bytes"] == report["core"]["expected_bytes"]
    assert report["process"].get("exe", "").endswith(exe.name)  # from /proc, read by the service
    bad = crashed_thread(report)
    assert names(bad)[:3] == ["boom", "e", "d"], names(bad)


@pytest.mark.skipif(can_own() is not None, reason=str(can_own()))
def test_kill_9_of_the_service_with_cores_in_flight(builder, service):
    """Every core the service had taken still gets its report after a
    SIGKILL of the service (its children finish on their own), and a new
    service (as systemd's Restart= starts) takes the next crash."""
    if not kernel_has_socket_mode():
        pytest.skip("core_pattern '@socket' needs Linux 6.16+")
    exe = builder.build("core_crash.c")
    d = service.dir
    reports, sock = d / "r", d / "s"
    reports.mkdir(mode=0o700)
    args = ("--socket", sock, "--jobs", "2", "--report-dir", reports)
    first = service(*args, control=d / "c")
    with owned_core_pattern(f"@{sock}"):
        procs = [subprocess.Popen([exe, "big", "256"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, preexec_fn=_core_limit)
                 for _ in range(2)]
        deadline = time.monotonic() + 30
        while first.text().count("handling a core") < 2:
            assert time.monotonic() < deadline, first.text()
            time.sleep(0.01)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        pids = [p.pid for p in procs]
        for p in procs:
            p.wait(timeout=60)
        taken = wait_report(reports, pids)
        assert [r["process"]["pid"] for r in taken] == pids
        for r in taken:
            assert r["core"]["bytes"] == r["core"]["expected_bytes"], r["errors"]
            assert_chain(crashed_thread(r), ["boom", "e", "d", "main"], max_above=0)
        service(*args, control=d / "c")  # the stale sockets are taken over
        pid = crash([exe, "segv", 16])
        report, = wait_report(reports, [pid])
    assert names(crashed_thread(report))[:3] == ["boom", "e", "d"]


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is missing (apt-get install systemd)")
def test_socket_activation_with_both_sockets(builder, spawn, tmp_path):
    """As under collector-core.socket and collector-control.socket: two
    named fds, each used as what its name says."""
    t = spawn(builder.build("chain.c"), "1")
    core, control = tmp_path / "core.sock", tmp_path / "control.sock"
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([*socket_activate(core, control, names="core:control"),
                             *collector_argv("serve")],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            env=collector_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not control.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        r = run_command(collector_argv("attach", t.pid),
                        env=dict(collector_env(), COLLECTOR_CONTROL=str(control)))
        assert r.rc == 0 and r.report["timings"].get("service") is True, str(r)
        assert "listening on control, core" in log.read_text(), log.read_text()
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def private_core(builder):
    """A kernel-written core of `core_crash segv 3`, readable by anyone, in a
    directory anyone may enter (under the temp directory, where run_command
    runs); its executable in a directory only root may enter."""
    if can_own():
        pytest.skip(can_own())
    d = short_tempdir()
    d.chmod(0o755)
    private = d / "private"
    private.mkdir(mode=0o700)
    exe = private / "core_crash"
    shutil.copy2(builder.build("core_crash.c"), exe)
    with owned_core_pattern(f"{d}/core.%p", pipe_limit=0):
        pid = crash([exe, "segv", 3])
    core = d / f"core.{pid}"
    core.chmod(0o644)
    yield core
    shutil.rmtree(d, ignore_errors=True)


def core_command(*args, env=None, client=()):
    """`collector core --symbolize-budget 0 ARGS` with a state directory of
    its own (storm control would hold back a fingerprint seen too often);
    the report, without what differs from run to run."""
    with tempfile.TemporaryDirectory() as state:
        if client:  # NOBODY_CLIENT's
            os.chown(state, NOBODY, NOBODY)
        env = dict(env or collector_env(), COLLECTOR_STATE_DIR=state)
        r = run_command([*(client or collector_argv()), "core", "--symbolize-budget", "0",
                         *map(str, args)], env=env)
    if r.rc == 0:
        r.report = json.loads(r.stdout)
        r.timings = r.report.pop("timings")
        for key in ("report_id", "time"):
            r.report.pop(key)
    return r


def test_core_file_through_the_service(private_core, service):
    """The same report through the service (twice: the second with its
    caches warm) as in-process, the path named relative to the client's
    directory; said so in the timings and the service's log."""
    serving = service()
    relative = private_core.relative_to(tempfile.gettempdir())  # run_command's directory
    first, again = core_command(relative), core_command(relative)
    alone = core_command("--no-service", relative)
    for r in (first, again, alone):
        assert r.rc == 0, str(r)
    assert first.timings.get("service") is True, serving.text() + first.stderr
    assert again.timings.get("service") is True, serving.text() + again.stderr
    assert "service" not in alone.timings
    assert first.report == again.report == alone.report
    assert first.report["core"]["path"] == str(private_core)
    crashed = crashed_thread(first.report)
    assert names(crashed)[:4] == ["boom", "e", "d", "crasher"], names(crashed)
    assert len(re.findall(rf"core {relative}: read for pid \d+", serving.text())) == 2


def delivered(serving: Service, n: int) -> list[str]:
    """The service's first `n` "delivered" log lines (its child writes one
    just after it answers the client)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in serving.text().splitlines() if ": delivered for pid" in line]
        if len(lines) >= n or time.monotonic() > deadline:
            return lines[:n]
        time.sleep(0.05)


def test_a_bad_core_file_says_what_it_says_in_process(private_core, service, tmp_path):
    """A file that is missing, a FIFO, a directory, not a core, a core cut
    in its headers or notes: the service answers with the exit status and
    the one line `collector core --no-service` has; a core cut in its memory
    is still a report, the same one."""
    serving = service()
    data = private_core.read_bytes()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "text").write_text("not a core\n")
    (tmp_path / "headers").write_bytes(data[:100])
    (tmp_path / "notes").write_bytes(data[:64] + b"\xff" * 4000)
    (tmp_path / "memory").write_bytes(data[:len(data) // 2])
    refused = set()
    for i, name in enumerate(("missing", "fifo", ".", "text", "headers", "notes", "memory")):
        path = tmp_path / name
        served, alone = core_command(path), core_command("--no-service", path)
        assert (served.rc, served.stderr, served.report) == \
            (alone.rc, alone.stderr, alone.report), f"{served}\n{alone}"
        # said by the service's child, not by a client that read the file itself
        assert delivered(serving, i + 1)[-1].endswith(f"{{'exit': {served.rc}}}"), serving.text()
        if served.rc:
            assert served.stderr.count("\n") == 1, str(served)
            refused.add(name)
        else:
            assert served.timings.get("service") is True and served.report["errors"]
    assert "truncated" in " ".join(served.report["errors"]), served.report["errors"]
    assert refused >= {"missing", "fifo", ".", "text", "headers"}, refused
    assert serving.proc.poll() is None


def test_a_client_reads_only_the_core_files_it_may(private_core, service, tmp_path):
    """nobody: a core file it may not read is refused by its own open, as
    in-process; of one it may read, the service opens the files the core
    names as nobody, so the executable in root's directory is not found."""
    serving = service()
    client = [sys.executable, "-c", NOBODY_CLIENT]
    secret = tmp_path / "core"
    shutil.copy2(private_core, secret)
    secret.chmod(0o600)
    os.chmod(tmp_path, 0o755)
    refused = core_command(secret, client=client)
    assert refused.rc == 10, str(refused)
    assert refused.stderr == f"collector: {secret}: cannot open {secret}: Permission denied\n"
    allowed, alone = core_command(private_core, client=client), core_command(private_core)
    assert allowed.rc == 0 and alone.rc == 0, f"{allowed}\n{alone}"
    assert allowed.timings.get("service") is True, serving.text()
    exe = str(private_core.parent / "private" / "core_crash")
    theirs, ours = ([m for m in r.report["modules"] if m["path"] == exe][0]
                    for r in (allowed, alone))
    assert ours["found_by"] == "path" and "build_id" in ours, ours
    assert theirs.get("found_by") is None and "no file" in theirs.get("error", ""), theirs
    assert "boom" in names(crashed_thread(alone.report))
    assert "boom" not in names(crashed_thread(allowed.report))


def test_core_file_without_a_service(private_core, tmp_path):
    """No socket, or a service that never starts the command: the core is
    read in-process, the latter after START_TIMEOUT."""
    mute = socket.socket(socket.AF_UNIX)
    mute.bind(str(tmp_path / "mute.sock"))
    mute.listen(4)
    held = []
    try:
        threading.Thread(target=lambda: held.append(mute.accept()[0]), daemon=True).start()
        for where in (tmp_path / "none.sock", tmp_path / "mute.sock"):
            r = core_command(private_core, env=dict(collector_env(), COLLECTOR_CONTROL=str(where)))
            assert r.rc == 0 and "service" not in r.timings, f"{where}: {r}"
            assert r.wall_s < control.START_TIMEOUT + 20, where
    finally:
        for sock in (mute, *held):
            sock.close()


# The resident worker: root's attach requests are taken and delivered by one
# long-lived child, not a child forked for each; each client still gets only
# its own environment, and a worker that dies is replaced while requests go
# the forked way meanwhile.


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(k) for k in f.read().split()]


def stored(state) -> int:
    db = sqlite3.connect(state / "reports.db")
    try:
        return db.execute("SELECT count(*) FROM reports").fetchone()[0]
    finally:
        db.close()


def attach_served(pid: int, env: dict | None = None):
    r = run_command(collector_argv("attach", pid), env=env)
    assert r.rc == 0 and r.report["timings"].get("service") is True, str(r)
    return r


def test_clients_one_after_another_keep_their_own_environment(builder, spawn, service,
                                                              tmp_path):
    """A's COLLECTOR_STATE_DIR (which wins over a configuration file) is not
    B's: the worker put its own environment back after A's request."""
    t = spawn(builder.build("chain.c"), "3")
    serving = service()
    a, b = tmp_path / "a", tmp_path / "b"
    config = tmp_path / "b.toml"
    config.write_text(f'[collector]\nstate_dir = "{b}"\n')
    attach_served(t.pid, {**collector_env(), "COLLECTOR_STATE_DIR": str(a)})
    env = {k: v for k, v in collector_env().items() if k != "COLLECTOR_STATE_DIR"}
    attach_served(t.pid, {**env, "COLLECTOR_CONFIG": str(config)})
    assert serving.text().count("), resident worker") == 2, serving.text()
    assert (stored(a), stored(b)) == (1, 1)


def test_a_worker_that_dies_is_replaced(builder, spawn, service):
    t = spawn(builder.build("chain.c"), "3")
    serving = service()
    attach_served(t.pid)
    worker, = children(serving.proc.pid)
    os.kill(worker, signal.SIGKILL)
    attach_served(t.pid)  # by the worker or, if it is not back yet, a forked child
    time.sleep(1.2)  # a worker is started again at most once a second
    attach_served(t.pid)
    assert serving.text().count("), resident worker") >= 2, serving.text()
    deadline = time.monotonic() + 10
    while worker in children(serving.proc.pid) or len(children(serving.proc.pid)) != 1:
        assert time.monotonic() < deadline, (children(serving.proc.pid), serving.text())
        time.sleep(0.05)  # the dead one reaped, the new one alone


def test_clients_at_once_are_all_served(builder, spawn, service):
    """While the worker delivers, a request goes the forked way; while it
    takes a report, the next waits (two clients asking for the same process
    at once both get it, as when the service took one at a time)."""
    exe = builder.build("chain.c")
    targets = [spawn(exe, "3") for _ in range(2)]
    serving = service()
    results = []
    threads = [threading.Thread(target=lambda pid=t.pid: results.append(attach_served(pid)))
               for t in targets for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 6, serving.text()
    assert len({r.report["report_id"] for r in results}) == 6
