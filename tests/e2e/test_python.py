"""CPython frames of real interpreters (pyenv's 3.8-3.13 where installed,
Debian's stripped python3): live attach and kernel-written cores of the
fixture tests/fixtures/pynested.py, placed next to the eval-loop frames;
cross-checked with pystack where it is installed."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from collector.delivery import fingerprint

try:
    from pythons import interpreters, pyenv
except ImportError:  # pragma: no cover - if tests/ ever becomes a package
    from tests.pythons import interpreters, pyenv

from .corepattern import can_own, crash, crashed_thread, owned_core_pattern, short_tempdir
from .helpers import (REPO, collector_argv, collector_env, fmt_thread, run_command,
                      schema_errors, thread_by_tid)

SCRIPT = REPO / "tests" / "fixtures" / "pynested.py"
EVAL = "_PyEval_EvalFrameDefault"
# time.sleep: clock_nanosleep, or pselect6 before 3.11; Event.wait: futex
SLEEPING = ("230", "270", "202")


@pytest.fixture(params=interpreters())
def python(request):
    if request.param is None:
        pytest.skip(f"{request.node.callspec.id} is not installed")
    return request.param


def marks() -> dict[str, int]:
    """`# at:NAME` -> its line number in the fixture script."""
    return {m.group(1): n for n, line in enumerate(SCRIPT.read_text().splitlines(), 1)
            if (m := re.search(r"# at:(\w+)", line))}


def pyframes(thread: dict) -> list[tuple[str, str, int | None]]:
    """(base name of the function, file base name, line), innermost first."""
    return [((f["function"] or "?").rsplit(".", 1)[-1], os.path.basename(f.get("file") or "?"),
             f.get("line")) for f in thread["frames"] if f["method"] == "interpreter"]


def assert_placed(thread: dict):
    """Every run of interpreter frames sits just above an eval-loop frame,
    and every eval-loop frame has Python frames above it."""
    frames = thread["frames"]
    for above, below in zip(frames, frames[1:]):
        if above["method"] == "interpreter" and below["method"] != "interpreter":
            assert below["function"] == EVAL, fmt_thread(thread)
        if below["function"] == EVAL:
            assert above["method"] == "interpreter", fmt_thread(thread)
    for f in frames:
        if f["method"] == "interpreter":
            assert f["interpreter"] == "cpython" and f["rel_pc"] is None and f["module"] is None


def report_of(argv) -> dict:
    with tempfile.TemporaryDirectory() as state:
        r = run_command(collector_argv(*argv, "--symbolize-budget", "0"),
                        env=dict(collector_env(), COLLECTOR_STATE_DIR=state))
    assert r.rc == 0, str(r)
    report = json.loads(r.stdout)
    errs = schema_errors(report)
    assert not errs, "\n".join(errs[:20])
    assert not [e for e in report["errors"] if "python" in e], report["errors"]
    return report


def main_expected(m: dict, inner: str = "py_inner") -> list[tuple[str, str, int]]:
    return [("py_inner", "pynested.py", m[inner]), ("py_mid", "pynested.py", m["py_mid"]),
            ("py_outer", "pynested.py", m["py_outer"]), ("<module>", "pynested.py", m["module"])]


def test_attach_nested_and_worker(python, spawn):
    t = spawn(python, SCRIPT, parked="all", syscalls=SLEEPING)
    report = report_of(["attach", t.pid])
    m = marks()
    main = thread_by_tid(report, t.pid)
    assert pyframes(main) == main_expected(m), fmt_thread(main)
    assert_placed(main)
    worker = next(th for th in report["threads"] if th["tid"] != t.pid)
    names = [name for name, _, _ in pyframes(worker)]
    assert ("worker_wait", "pynested.py", m["worker_wait"]) in pyframes(worker), fmt_thread(worker)
    assert names[:2] == ["wait", "wait"] and names[-1] == "_bootstrap", names
    assert_placed(worker)
    if pystack_exe():
        assert pystack(t.pid) == {th["tid"]: pyframes(th) for th in report["threads"]}


def test_ctypes_callback_interleaves(python, spawn):
    """Python -> qsort -> Python: the callback's frames above libc's qsort,
    the caller's below it."""
    t = spawn(python, SCRIPT, "ctypes", parked="all", syscalls=SLEEPING)
    main = thread_by_tid(report_of(["attach", t.pid]), t.pid)
    m = marks()
    assert pyframes(main) == [("cb_inner", "pynested.py", m["cb_inner"]),
                              ("compare", "pynested.py", m["compare"]),
                              ("py_outer", "pynested.py", m["py_outer_ctypes"]),
                              ("<module>", "pynested.py", m["module"])], fmt_thread(main)
    at = {f.get("function"): f["index"] for f in reversed(main["frames"])}
    qsort = min(i for name, i in at.items() if name and "qsort" in name)
    assert at["compare"] < qsort < at["py_outer"], fmt_thread(main)
    assert_placed(main)


@pytest.fixture(scope="module")
def core_dir():
    if can_own():
        pytest.skip(can_own())
    d = short_tempdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_core_of_sigsegv_in_nested_functions(python, core_dir):
    with owned_core_pattern(f"{core_dir}/core.%p", pipe_limit=0):
        pid = crash([python, SCRIPT, "crash"])
    core = core_dir / f"core.{pid}"
    try:
        report = report_of(["core", core])
    finally:
        core.unlink(missing_ok=True)
    main = crashed_thread(report)
    assert main["tid"] == pid
    assert pyframes(main) == main_expected(marks(), "py_inner_crash"), fmt_thread(main)
    assert_placed(main)
    # grouped by the Python call site: os.kill and the libc/libpython
    # frames under it stay out
    assert fingerprint.frames(main) == ["py:pynested.py!py_inner", "py:pynested.py!py_mid",
                                        "py:pynested.py!py_outer", "py:pynested.py!<module>"]


def pystack_exe() -> str | None:
    """pystack (the test extra installs it beside the suite's python)."""
    beside = os.path.join(os.path.dirname(sys.executable), "pystack")
    return os.environ.get("PYSTACK") or shutil.which("pystack") or \
        (beside if os.access(beside, os.X_OK) else None)


def pystack(pid: int) -> dict[int, list[tuple[str, str, int]]]:
    """pystack's Python frames of each thread, innermost first."""
    out = subprocess.run([pystack_exe(), "remote", str(pid)], capture_output=True, text=True,
                         timeout=60).stdout
    threads: dict[int, list] = {}
    tid = None
    for line in out.splitlines():
        if m := re.match(r"Traceback for thread (\d+)", line):
            tid = int(m.group(1))
            threads[tid] = []
        elif (m := re.match(r'\s+\(Python\) File "(.*)", line (\d+), in (.+)$', line)) and tid:
            threads[tid].insert(0, (m.group(3), os.path.basename(m.group(1)), int(m.group(2))))
    return threads


def test_embedded_libpython_with_a_subinterpreter(python, builder, spawn):
    """A C program linking libpython; the main interpreter in one thread,
    a subinterpreter in another."""
    config = python + "-config"
    if not os.path.exists(config):
        pytest.skip(f"{config} is not installed")
    flags = subprocess.run([config, "--includes", "--ldflags", "--embed"], capture_output=True,
                           text=True, check=True).stdout.split()
    libdir = subprocess.run([config, "--prefix"], capture_output=True, text=True,
                            check=True).stdout.strip() + "/lib"
    exe = builder.build("pyembed.c", extra=(*flags, f"-Wl,-rpath,{libdir}"))
    t = spawn(exe, parked="all", syscalls=SLEEPING)
    report = report_of(["attach", t.pid])
    main = thread_by_tid(report, t.pid)
    sub = next(th for th in report["threads"] if th["tid"] != t.pid)
    assert pyframes(main) == [("emb_inner", "<string>", 4), ("emb_outer", "<string>", 6),
                              ("<module>", "<string>", 7)], fmt_thread(main)
    assert pyframes(sub) == [("sub_inner", "<string>", 3), ("sub_outer", "<string>", 5),
                             ("<module>", "<string>", 6)], fmt_thread(sub)
    assert_placed(main)
    assert_placed(sub)


def test_core_streamed_from_the_kernel(core_dir):
    """`core --from-kernel` reads the core once and keeps only some of it:
    for a Python process that includes the interpreter's memory. (The
    handler's worker analyses a root crash as nobody: the interpreter must
    be one nobody can read, as Debian's is; pyenv's lives under /root.)"""
    python = "/usr/bin/python3"
    if not os.path.exists(python):
        pytest.skip("no python3 readable by every user")
    with owned_core_pattern(f"{core_dir}/core.%p", pipe_limit=0):
        pid = crash([python, SCRIPT, "crash"])
    core = core_dir / f"core.{pid}"
    try:
        with tempfile.TemporaryDirectory() as state, open(core, "rb") as stdin:
            r = subprocess.run(collector_argv(
                "core", "--from-kernel", "--symbolize-budget", "0", f"P={pid}", f"I={pid}",
                "s=11", "t=0", "u=0", "g=0", "h=test", "e=python"), stdin=stdin,
                capture_output=True, text=True, timeout=120,
                env=dict(collector_env(), COLLECTOR_STATE_DIR=state))
    finally:
        core.unlink(missing_ok=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert not [e for e in report["errors"] if "python" in e], report["errors"]
    assert pyframes(crashed_thread(report)) == main_expected(marks(), "py_inner_crash")
