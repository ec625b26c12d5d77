"""`collector watch PID`: a crash of a watched process is reported and the
process still dies of it; Ctrl-C detaches and leaves the process running, or
stopped if it was stopped, and never traced; a clean exit reports nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time

from conftest import collector_argv, collector_env, proc_state, read_status

from .helpers import fmt_thread, names, schema_errors
from .test_run import base

TIMEOUT = 30
SETTLE = 5  # seconds a thread may stay runnable after its tracer leaves


class Watch:
    """`collector watch PID` running in the background, ready once it says so."""

    def __init__(self, pid: int):
        self.proc = subprocess.Popen(collector_argv("watch", pid), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env=collector_env(), cwd=tempfile.gettempdir(),
                                     start_new_session=True)
        line = self.proc.stderr.readline().decode()
        assert "watching" in line, f"collector watch said {line!r}; rc {self.proc.poll()}"

    def finish(self, sig: int | None = None) -> tuple[int, dict | None, str]:
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"collector watch did not finish: {err.decode()}")
        assert b"Traceback" not in err, err.decode()
        report = json.loads(out) if out.strip() else None
        if report is not None:
            assert not schema_errors(report)
        return self.proc.returncode, report, err.decode()


def assert_untraced(pid: int, state: str):
    """No thread traced, each in `state` once it settles: a thread detached
    from a group-stop runs (R) for a moment before it stops again."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        assert read_status(pid, int(tid))["TracerPid"] == "0", f"thread {tid} still traced"
        deadline = time.monotonic() + SETTLE
        while proc_state(pid, int(tid)) == "R" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc_state(pid, int(tid)) == state, f"thread {tid}: {proc_state(pid, int(tid))}"


def test_a_crash_is_reported_and_the_process_dies_of_it(builder, spawn):
    target = spawn(builder.build("crash.c"), "null", "wait", parked=None)
    watch = Watch(target.pid)
    os.kill(target.pid, signal.SIGUSR1)     # handled by the program: passed through
    rc, report, err = watch.finish()
    assert rc == 0 and report is not None, err
    assert report["source"] == "watch" and report["signal"]["name"] == "SIGSEGV"
    thread = next(t for t in report["threads"] if t.get("crashed"))
    assert thread["frames"][1]["method"] == "dummy_fde", fmt_thread(thread)
    assert [base(n) for n in names(thread)[1:5]] == ["inner", "middle", "outer", "main"]
    assert target.proc.wait(timeout=TIMEOUT) == -signal.SIGSEGV
    assert "going" in target.output()


def test_ctrl_c_detaches_and_leaves_the_process_running(builder, spawn):
    target = spawn(builder.build("chain.c"), 2)
    watch = Watch(target.pid)
    rc, report, err = watch.finish(signal.SIGINT)
    assert rc == 0 and report is None, err
    assert "detached" in err
    assert_untraced(target.pid, "S")
    assert target.proc.poll() is None


def test_a_stopped_process_stays_stopped(builder, spawn):
    target = spawn(builder.build("chain.c"), 1)
    os.kill(target.pid, signal.SIGSTOP)
    deadline = time.monotonic() + TIMEOUT
    while proc_state(target.pid) != "T" and time.monotonic() < deadline:
        time.sleep(0.01)
    watch = Watch(target.pid)
    time.sleep(0.1)
    rc, report, err = watch.finish(signal.SIGTERM)
    assert rc == 0 and report is None, err
    assert_untraced(target.pid, "T")
    os.kill(target.pid, signal.SIGCONT)


def test_a_clean_exit_reports_nothing(builder, spawn):
    target = spawn(builder.build("crash.c"), "exit0", "wait", parked=None)
    watch = Watch(target.pid)
    os.kill(target.pid, signal.SIGUSR1)
    rc, report, err = watch.finish()
    assert rc == 0 and report is None, err
    assert "no crash" in err
    assert target.proc.wait(timeout=TIMEOUT) == 0
