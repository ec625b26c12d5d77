"""Storm control before the work, through the real kernel: the same crash
many times in socket mode ('@'), request mode ('@@', Linux 6.17+) and pipe
mode. A suppressed crash forks no worker (the handler logs one line per
worker at --log-level debug: there are as many as reports), a declined one
leaves no core at all (the crashed process's wait status says so), each is
counted (storm state, the local store), and the next report of the crash
says how many were suppressed before it."""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import time

import pytest

from collector.service.pipe import KERNEL_ARGS

from .corepattern import (CRASH_ENV, can_own, handler_script, owned_core_pattern,
                          short_tempdir, wait_report)
from .helpers import collector_argv, collector_env
from .receivers import stop
from .test_core_socket import kernel_has_socket_mode

pytestmark = pytest.mark.skipif(can_own() is not None, reason=str(can_own()))
# two reports at once, then one every 2 s: a burst of crashes is mostly suppressed
STORM = "[storm]\nburst = 2\nper_minute = 30\n"
CRASHES = 6


def kernel_has_request_mode() -> bool:
    return tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2]) >= (6, 17)


@pytest.fixture
def work():
    d = short_tempdir()
    (d / "r").mkdir(mode=0o700)
    (d / "collector.toml").write_text(f'[collector]\nstate_dir = "{d}/state"\n'
                                      f'[spool]\ndir = "{d}/spool"\n{STORM}')
    yield d
    shutil.rmtree(d, ignore_errors=True)


def crash_status(argv) -> tuple[int, bool]:
    """(pid, whether the kernel says it dumped core) of a crashing fixture."""
    def limit():
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=limit,
                            env=dict(os.environ, **CRASH_ENV))
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = -1  # reaped here
    assert os.WIFSIGNALED(status), f"the fixture did not die of a signal: {status:#x}"
    return proc.pid, os.WCOREDUMP(status)


def storm(exe, reports, log) -> tuple[list[dict], list[bool], int]:
    """CRASHES crashes at once, then (tokens refilled) one more: the reports,
    whether each crash dumped core, and how many the log says were suppressed."""
    got = [crash_status([exe, "abort"]) for _ in range(CRASHES)]
    time.sleep(2.2)
    got.append(crash_status([exe, "abort"]))
    deadline = time.monotonic() + 60
    while True:  # a suppressed crash has no report: wait until each is one or the other
        suppressed = len(re.findall(r"suppressed by storm control before the analysis|"
                                    r"crash suppressed before the analysis", log()))
        files = list(reports.glob("*.json"))
        if len(files) + suppressed >= len(got) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    pids = {pid for pid, _ in got}
    found = [r for r in (json.loads(f.read_text()) for f in files) if r["process"]["pid"] in pids]
    return sorted(found, key=lambda r: r["time"]), [c for _, c in got], suppressed


def check(found, suppressed, state, log_text):
    assert len(found) + suppressed == CRASHES + 1, log_text
    assert 2 <= len(found) <= 4 and suppressed >= CRASHES - 3, log_text
    # one worker per report, none for a suppressed crash
    workers = len(re.findall(r'"event": "worker"', log_text))
    assert workers == len(found), log_text
    last = found[-1]
    assert last["suppressed"]["count"] == suppressed, last.get("suppressed")
    assert all("suppressed" not in r for r in found[:-1])
    db = sqlite3.connect(state / "reports.db")
    counted = dict(db.execute("SELECT fingerprint, count FROM suppressed").fetchall())
    assert counted == {last["fingerprint"]: suppressed}, counted  # under the crash's fingerprint


@pytest.fixture
def serve(work):
    """start(*LISTEN): `collector serve` on LISTEN (--socket PATH, --control
    PATH), its log in work/log, stopped after the test."""
    started = []

    def start(*listen):
        proc = subprocess.Popen(
            collector_argv("serve", *listen, "--report-dir", work / "r",
                           "--config", work / "collector.toml", "--log-level", "debug"),
            stdout=subprocess.DEVNULL, stderr=open(work / "log", "w"), env=collector_env(),
            start_new_session=True)
        started.append(proc)
        deadline = time.monotonic() + 30
        while "listening" not in (work / "log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (work / "log").read_text()
            time.sleep(0.05)
    yield start
    for proc in started:
        stop(proc)


@pytest.mark.parametrize("mode", ["@", "@@"])
def test_suppressed_before_the_worker(builder, work, serve, mode):
    if not kernel_has_socket_mode():
        pytest.skip("core_pattern '@socket' needs Linux 6.16+")
    if mode == "@@" and not kernel_has_request_mode():
        pytest.skip("core_pattern '@@socket' needs Linux 6.17+")
    exe = builder.build("core_crash.c", "O0-fp")
    sock = work / "s"
    serve("--socket", sock)
    log = lambda: (work / "log").read_text()  # noqa: E731
    with owned_core_pattern(f"{mode}{sock}"):
        found, dumped, suppressed = storm(exe, work / "r", log)
    check(found, suppressed, work / "state", log())
    for r in found:
        assert r["signal"]["name"] == "SIGABRT" and r["core"]["bytes"] == r["core"]["expected_bytes"]
    if mode == "@@":  # declined before the dump: the kernel wrote no core at all
        assert dumped.count(False) == suppressed and dumped.count(True) == len(found), dumped
        assert len(re.findall(r"\(declined;", log())) == suppressed
    else:
        assert len(re.findall(r"\(connection closed;", log())) == suppressed
    cpu = [float(x) for x in re.findall(r"before the analysis .*cpu_ms=([\d.]+)", log())]
    assert cpu and max(cpu) < 60, cpu  # no analysis (that takes over 100 ms here)


def test_pipe_mode_decides_first(builder, work):
    exe = builder.build("core_crash.c", "O0-fp")
    script = handler_script(work, {"COLLECTOR_CONFIG": work / "collector.toml",
                                   "COLLECTOR_LOG_LEVEL": "debug"})
    # the handler's diagnostics into a file (the kernel gives it no stderr)
    script.write_text(script.read_text().replace("PYTHONPATH=", f"exec 2>>{work}/log; PYTHONPATH="))
    (work / "log").touch()
    pattern = f"|{script} core --from-kernel --report-dir {work / 'r'} {KERNEL_ARGS}"
    assert len(pattern) < 128, pattern
    log = lambda: (work / "log").read_text()  # noqa: E731
    with owned_core_pattern(pattern, pipe_limit=4):
        found, _, suppressed = storm(exe, work / "r", log)
    # handler_script's state directory (its environment) wins over the configuration's
    check(found, suppressed, work / "handler-state", log())


def test_pipe_mode_handed_to_the_service_decides_there(builder, work, serve):
    """A pipe handler hands each core to the running service, whose parent
    decides on the first notes: a suppressed crash's pipe is closed there,
    with no child forked for it (one per report)."""
    exe = builder.build("core_crash.c", "O0-fp")
    control = work / "control.sock"
    serve("--control", control)
    log = lambda: (work / "log").read_text()  # noqa: E731
    script = handler_script(work, {"COLLECTOR_CONTROL": control})
    pattern = f"|{script} core --from-kernel --report-dir {work / 'own'} {KERNEL_ARGS}"
    with owned_core_pattern(pattern, pipe_limit=4):
        found, _, suppressed = storm(exe, work / "r", log)
    check(found, suppressed, work / "state", log())
    assert not (work / "own").exists(), "a handler wrote a report of its own"
    assert len(re.findall(r"\(pipe closed;", log())) == suppressed, log()
    assert log().count("handling a core") == len(found), log()
