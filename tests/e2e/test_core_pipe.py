"""`collector core --from-kernel` as the kernel's '|' core_pattern handler:
real crashes, real kernel, the report written by the handler itself.

Each test owns core_pattern through `owned_core_pattern` (a file lock, and
the old core_pattern and core_pipe_limit put back whatever happens)."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from collector.service.pipe import KERNEL_ARGS

from .corepattern import (CRASH_ENV, can_own, crash, crashed_thread, handler_script,
                          owned_core_pattern, short_tempdir, wait_report)
from .helpers import assert_chain, fmt_thread, names, same_path

pytestmark = pytest.mark.skipif(can_own() is not None, reason=str(can_own()))

WORKER = ["park", "c", "b", "a", "worker", "start_thread"]
MAIN = ["park", "c", "b", "a", "main"]
CRASHER = ["boom", "e", "d"]


@pytest.fixture
def handler_dir():
    d = short_tempdir()
    (d / "r").mkdir(mode=0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def pipe_pattern(d, *extra) -> str:
    pattern = " ".join([f"|{handler_script(d)} core --from-kernel --report-dir {d / 'r'}",
                        *extra, KERNEL_ARGS])
    assert len(pattern) < 128, f"core_pattern too long ({len(pattern)}): {pattern}"
    return pattern


def run_crash(d, argv, *extra) -> dict:
    with owned_core_pattern(pipe_pattern(d, *extra), pipe_limit=4):
        pid = crash(argv)
        report, = wait_report(d / "r", [pid])
    assert report["source"] == "core"
    assert report["process"]["pid"] == pid
    assert report["core"]["bytes"] == report["core"]["expected_bytes"], report["core"]
    assert not [e for e in report["errors"] if "core" in e], report["errors"]
    assert CRASH_ENV["FIXTURE_API_TOKEN"] not in json.dumps(report), "a secret leaked"
    return report


def test_segv_in_a_worker_of_16_threads(builder, handler_dir):
    exe = builder.build("core_crash.c")
    report = run_crash(handler_dir, [exe, "segv", 16])
    p = report["process"]
    assert same_path(p["exe"], exe) and p["cmdline"] == [str(exe), "segv", "16"], p
    assert p["namespaces"].get("pid", "").startswith("pid:["), p
    assert p["uid"] == os.getuid() and p["cgroup"].startswith("/"), p

    sig = report["signal"]
    assert (sig["number"], sig["name"], sig["si_addr"]) == (11, "SIGSEGV", 0x10), sig
    assert sig["si_code"] == 1, sig  # SEGV_MAPERR

    threads = report["threads"]
    assert len(threads) == 16
    assert threads[0]["tid"] == p["pid"], "main thread first"
    assert [t["tid"] for t in threads[1:]] == sorted(t["tid"] for t in threads[1:])
    bad = crashed_thread(report)
    assert bad["name"] == "crasher", fmt_thread(bad)
    assert bad["tid"] == report["core"]["crashed_tid"], "the kernel's %I is the marked thread"
    assert names(bad)[:3] == CRASHER, fmt_thread(bad)
    assert_chain(bad, CRASHER + ["crasher", "start_thread"], max_above=0)
    assert_chain(threads[0], MAIN, max_above=1)
    workers = [t for t in threads if t["name"].startswith("w")]
    assert len(workers) == 14
    for t in workers:
        assert_chain(t, WORKER, max_above=1)
    # the handler kept stack windows and the vdso, not the 16 stack mappings
    assert report["core"]["kept_bytes"] <= 8 << 20 < report["core"]["bytes"], report["core"]
    # a report written to --report-dir went through delivery's preparation too
    assert re.fullmatch(r"[0-9a-f]{16,}", report.get("fingerprint") or ""), report.get("fingerprint")


def test_abort_in_main(builder, handler_dir):
    exe = builder.build("core_crash.c", "O0-fp")
    report = run_crash(handler_dir, [exe, "abort"])
    assert report["signal"]["name"] == "SIGABRT" and "si_addr" not in report["signal"]
    bad = crashed_thread(report)
    assert bad["tid"] == report["process"]["pid"], "abort() ran in the main thread"
    i = assert_chain(bad, ["boom", "e", "d", "main"], max_above=4)
    # libc's name for it may be an alias (abort, __GI_abort)
    assert any("abort" in (n or "") for n in names(bad)[:i]), fmt_thread(bad)


def test_512_mib_process(builder, handler_dir):
    """The core is over 512 MiB; the handler reads it all but keeps a few MiB."""
    exe = builder.build("core_crash.c")
    report = run_crash(handler_dir, [exe, "big", 512])
    core = report["core"]
    assert core["bytes"] >= 512 << 20, core
    assert core["kept_bytes"] <= 8 << 20, core
    bad = crashed_thread(report)
    assert_chain(bad, CRASHER + ["main"], max_above=0)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is missing")
def test_crash_in_another_pid_namespace(builder, handler_dir):
    """A containerised crash: the core names threads by their ids inside the
    namespace; the report uses the host's (from /proc/PID/task/*/status
    NSpid), so the main thread's tid is the process's host pid."""
    exe = builder.build("core_crash.c")
    with owned_core_pattern(pipe_pattern(handler_dir), pipe_limit=4):
        crash(["unshare", "--pid", "--fork", "--kill-child", exe, "segv", 4])
        report, = wait_report(handler_dir / "r", [str(exe)], key=lambda r: r["process"]["exe"])
    p = report["process"]
    assert p["namespaces"]["pid"] != os.readlink("/proc/self/ns/pid"), p["namespaces"]
    tids = [t["tid"] for t in report["threads"]]
    assert len(tids) == 4 and tids[0] == p["pid"] > 1, (p["pid"], tids)
    bad = crashed_thread(report)  # (thread names: setname fails without the namespace's /proc)
    assert bad["tid"] in tids[1:] and names(bad)[:3] == CRASHER, fmt_thread(bad)
    assert_chain(report["threads"][0], MAIN, max_above=1)
