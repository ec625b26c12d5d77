"""The kernel handler's worker, through the real kernel: the core of a
process owned by another user is analysed with that user's ids and no
privileges (shown by the worker's own /proc/self/status, logged at debug
level), and a worker that runs out of its time (worker.timeout) still ends
in a report that says so (the other ways a worker ends: tests/unit/test_worker.py)."""
from __future__ import annotations

import json
import shutil

import pytest

from collector.service.pipe import KERNEL_ARGS

from .corepattern import (FIXTURE_EXE, can_own, crash, crashed_thread, handler_script,
                          owned_core_pattern, short_tempdir, wait_report)
from .helpers import NOBODY, assert_chain, fmt_thread, names

pytestmark = pytest.mark.skipif(can_own() is not None, reason=str(can_own()))
CRASHER = ["boom", "e", "d"]
NO_CAPS = "0000000000000000"


@pytest.fixture
def handler(builder):
    """setup(worker_config) -> (crash(uid) -> (report, the worker's log line))."""
    d = short_tempdir()
    exe = d / f"{FIXTURE_EXE}-w"  # in a directory any uid may enter
    shutil.copy(builder.build("core_crash.c"), exe)

    def setup(worker: str = ""):
        (d / "r").mkdir(mode=0o700)
        (d / "cfg.toml").write_text(f'[collector]\nstate_dir = "{d}/state"\n[worker]\n{worker}\n')
        wrapper = d / "w"  # the kernel gives a handler no environment and no stderr
        wrapper.write_text(f"#!/bin/sh\nCOLLECTOR_CONFIG={d}/cfg.toml COLLECTOR_LOG_LEVEL=debug "
                           f"exec {handler_script(d)} \"$@\" 2>>{d}/log\n")
        wrapper.chmod(0o755)
        pattern = f"|{wrapper} core --from-kernel --report-dir {d / 'r'} {KERNEL_ARGS}"
        assert len(pattern) < 128, pattern

        def run(uid: int, *argv) -> tuple[dict, dict]:
            with owned_core_pattern(pattern, pipe_limit=4):
                pid = crash(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                             exe, *argv])
                report, = wait_report(d / "r", [pid])
            lines = [json.loads(line) for line in (d / "log").read_text().splitlines()
                     if line.startswith("{")]
            logged = [e for e in lines if e.get("event") == "worker" and e.get("pid") == pid]
            assert len(logged) == 1, (d / "log").read_text()
            return report, logged[0]
        return run

    yield setup
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("uid", [NOBODY, 12345])
def test_parsed_as_the_crashing_user_without_privileges(handler, uid):
    """uid 12345 has no passwd entry: the worker's effective ids are the
    crashing user's, its real and saved uid worker.user's (nobody), so the
    crashing user cannot signal or stop it."""
    report, worker = handler()(uid, "segv", 4)
    assert report["process"]["uid"] == uid and report["process"]["gid"] == uid
    assert worker["uid"] == f"{NOBODY} {uid} {NOBODY} {uid}", worker  # real, effective, saved, fs
    assert worker["gid"] == f"{uid} {uid} {uid} {uid}" and worker["groups"] == "", worker
    for cap in ("capinh", "capprm", "capeff", "capbnd", "capamb"):
        assert worker[cap] == NO_CAPS, (cap, worker)
    assert worker["nonewprivs"] == "1" and worker["dumpable"] == "0", worker
    assert worker["error"] is None
    assert report["errors"] == [], report["errors"]
    bad = crashed_thread(report)
    assert names(bad)[:3] == CRASHER, fmt_thread(bad)
    assert_chain(bad, CRASHER + ["crasher", "start_thread"], max_above=0)
    assert bad["frames"][0].get("file") is None  # -g0: symbolized from symbols alone
    assert 0 < report["timings"]["worker_ms"] == worker["worker_ms"]


def test_worker_out_of_time(handler):
    """worker.timeout: the worker is killed once the core has arrived; the
    report has what the handler read of /proc, and says why."""
    report, worker = handler("timeout = 0.001")(NOBODY, "segv", 4)
    assert any("worker.timeout" in e and "killed" in e for e in report["errors"]), report["errors"]
    assert worker["error"] and "worker.timeout" in worker["error"]
    _metadata_only(report)


def _metadata_only(report: dict) -> None:
    p = report["process"]
    assert p["uid"] == NOBODY and p["cmdline"][1:] == ["segv", "4"], p
    threads = report["threads"]
    assert len(threads) == 4 and threads[0]["tid"] == p["pid"], threads
    assert all(t["frames"] == [] and "not unwound" in t["stop_reason"] for t in threads)
    assert crashed_thread(report)["name"] == "crasher"
