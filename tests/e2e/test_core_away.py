"""Cores read away from home: the executable moved after the crash and
found again with --exe, under --sysroot, by build-id in a --debug-dir,
beside the core (also for a relative recorded path) and from debuginfod;
another build refused; each module saying how its file was found. The
build-ids are cross-checked against `eu-unstrip -n --core`, the names
against `eu-stack --core C -e EXE`. Then perf maps of a dead JIT process:
used while present and written by it, refused when touched after the crash."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import VARIANTS

from .corepattern import can_own, crash, crashed_thread, owned_core_pattern, short_tempdir
from .helpers import (build_id, collector_argv, collector_env, eu_stack, fmt_thread,
                      have_eu_stack, names, run_command, same_function, schema_errors)
from .receivers import debuginfod_server

CHAIN = ["e", "d", "main"]  # core_crash abort: main -> d -> e -> boom (abort)


@pytest.fixture(scope="module")
def moved(builder):
    """A core of core_crash (abort) run as HOME/victim; then the executable
    moved to AWAY/victim, HOME removed."""
    if can_own():
        pytest.skip(can_own())
    d = short_tempdir()
    home, away = d / "home", d / "away"
    home.mkdir()
    away.mkdir()
    shutil.copy(builder.build("core_crash.c"), home / "victim")
    with owned_core_pattern(f"{d}/core.%p", pipe_limit=0):
        pid = crash([home / "victim", "abort"])
    shutil.move(home / "victim", away / "victim")
    home.rmdir()
    yield {"core": d / f"core.{pid}", "exe": away / "victim", "recorded": str(home / "victim"),
           "other": builder.build("core_crash.c", "O0-fp"), "dir": d}
    shutil.rmtree(d, ignore_errors=True)


def report_of(core, *args, budget="0", **env) -> dict:
    with tempfile.TemporaryDirectory() as state:  # storm control: a state dir of its own
        r = run_command(collector_argv("core", core, "--symbolize-budget", budget, *args),
                        env=dict(collector_env(), COLLECTOR_STATE_DIR=state, **env))
    assert r.rc == 0, str(r)
    report = json.loads(r.stdout)
    assert not schema_errors(report), schema_errors(report)[:10]
    return report


def exe_module(report, moved) -> dict:
    return next(m for m in report["modules"] if m["path"] == moved["recorded"])


def main_names(report) -> list:
    return [n for n in names(crashed_thread(report)) if n]


def assert_found(report, moved, how, where=None):
    module = exe_module(report, moved)
    assert module.get("found_by") == how, module
    assert module.get("file") == str(where or moved["exe"]), module
    assert module["build_id"] == build_id(moved["exe"])
    ns = main_names(report)
    assert [n for n in ns if n in CHAIN] == CHAIN, fmt_thread(crashed_thread(report))


def test_moved_executable_is_missing_and_says_so(moved):
    report = report_of(moved["core"], COLLECTOR_DEBUG_DIRS="/nonexistent")
    module = exe_module(report, moved)
    assert "found_by" not in module and module["build_id"] is None
    assert module["error"].startswith("no file with the build-id in the core "
                                      f"({build_id(moved['exe'])})"), module
    assert "main" not in main_names(report)


@pytest.mark.skipif(not have_eu_stack(), reason="eu-stack is not installed")
def test_exe_names_what_eu_stack_names(moved):
    report = report_of(moved["core"], "--exe", moved["exe"])
    assert report["errors"] == [], report["errors"]
    assert_found(report, moved, "exe")
    theirs = eu_stack(0, target=("--core", moved["core"], "-e", moved["exe"]))
    thread = crashed_thread(report)
    want = theirs[thread["tid"]]
    ours = thread["frames"]
    assert [f["pc"] for f in ours] == [pc for pc, _ in want], fmt_thread(thread)
    for frame, (_, their_name) in zip(ours, want):
        if their_name:
            assert frame["function"] and same_function(frame["function"], their_name,
                                                       frame["module"]), (frame, their_name)


def test_another_build_given_with_exe_is_refused(moved):
    report = report_of(moved["core"], "--exe", moved["other"],
                       COLLECTOR_DEBUG_DIRS="/nonexistent")
    assert [e for e in report["errors"] if str(moved["other"]) in e
            and "not the one that crashed" in e], report["errors"]
    module = exe_module(report, moved)
    assert module["build_id"] is None and "another build" in module["error"], module
    assert "main" not in main_names(report)


def test_sysroot(moved, tmp_path):
    """Every mapped file copied under a sysroot at its recorded path: all of
    them are taken from there (looked for there first)."""
    report = report_of(moved["core"], "--exe", moved["exe"])
    root = tmp_path / "root"
    for m in report["modules"]:
        if m["path"].startswith("/"):
            src = moved["exe"] if m["path"] == moved["recorded"] else m["path"]
            dest = root / m["path"].lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)
    got = report_of(moved["core"], "--sysroot", root)
    assert got["errors"] == [], got["errors"]
    files = [m for m in got["modules"] if m["path"].startswith("/")]
    assert len(files) >= 2 and {m["found_by"] for m in files} == {"sysroot"}, files
    assert all(m["file"] == str(root / m["path"].lstrip("/")) for m in files), files
    assert_found(got, moved, "sysroot", root / moved["recorded"].lstrip("/"))


def eu_unstrip_ids(core) -> dict[str, str]:
    """Module file -> build-id, as `eu-unstrip -n --core` reads them from the core."""
    r = subprocess.run(["eu-unstrip", "-n", "--core", str(core)], capture_output=True,
                       text=True, timeout=60)
    out = {}
    for line in r.stdout.splitlines():  # 0xSTART+SIZE ID@0xADDR FILE DEBUGFILE NAME
        m = re.match(r"0x[0-9a-f]+\+0x[0-9a-f]+ ([0-9a-f]+)@0x[0-9a-f]+ (\S+) (\S+) (\S+)", line)
        if m:
            out[m.group(4)] = m.group(1)
    return out


@pytest.mark.skipif(shutil.which("eu-unstrip") is None, reason="eu-unstrip is not installed")
def test_build_id_in_a_debug_dir(moved, tmp_path):
    ids = eu_unstrip_ids(moved["core"])
    assert ids.get(moved["recorded"]) == build_id(moved["exe"]), ids
    bid = ids[moved["recorded"]]
    link = tmp_path / "debug" / ".build-id" / bid[:2] / bid[2:]
    link.parent.mkdir(parents=True)
    link.symlink_to(moved["exe"])
    report = report_of(moved["core"], "--debug-dir", tmp_path / "debug")
    assert report["errors"] == [], report["errors"]
    assert_found(report, moved, "build-id", link)
    # every module's id is the one eu-unstrip reads from the core's own note pages
    for m in report["modules"]:
        if m["path"] in ids:
            assert m["build_id"] == ids[m["path"]], m


def test_beside_the_core_and_relative_recorded_path(moved, tmp_path):
    beside = tmp_path / "beside"
    beside.mkdir()
    shutil.copy(moved["core"], beside / "core")
    shutil.copy(moved["exe"], beside / "victim")
    assert_found(report_of(beside / "core"), moved, "core-dir", beside / "victim")
    # the recorded path made relative (same length, so the notes keep their layout)
    recorded = moved["recorded"].encode()
    n = len(recorded) - len(b"victim")
    prefix = b"./" * (n // 2)
    relative = (b".//" + prefix[2:] if n % 2 else prefix) + b"victim"  # ./././victim
    assert len(relative) == len(recorded) and not relative.startswith(b"/")
    data = (beside / "core").read_bytes()
    assert data.count(recorded + b"\0") >= 1
    (beside / "core").write_bytes(data.replace(recorded + b"\0", relative + b"\0"))
    report = report_of(beside / "core")
    module = next(m for m in report["modules"] if m["path"] == str(beside / "victim"))
    assert module["found_by"] == "core-dir", module
    assert [n for n in main_names(report) if n in CHAIN] == CHAIN


@pytest.fixture
def served(moved, tmp_path):
    """A debuginfod serving a directory that holds the executable."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(moved["exe"], served / "victim")
    with debuginfod_server(served, tmp_path / "db.sqlite",
                           f"/buildid/{build_id(moved['exe'])}/executable") as url:
        yield url


def test_debuginfod_serves_the_executable(moved, served, tmp_path):
    cache = tmp_path / "cache"
    report = report_of(moved["core"], budget="10", DEBUGINFOD_URLS=served,
                       DEBUGINFOD_CACHE_PATH=cache, COLLECTOR_DEBUG_DIRS="/nonexistent")
    assert report["errors"] == [], report["errors"]
    assert_found(report, moved, "debuginfod", cache / build_id(moved["exe"]) / "executable")


# ---------------------------------------------------------------- perf maps


@pytest.fixture(scope="module")
def jit_core(builder):
    """A core of jit.c (perf) that faulted in the callback its JIT code
    called, with its /tmp/perf-PID.map left behind."""
    if can_own():
        pytest.skip(can_own())
    exe = builder.build("jit.c", VARIANTS["O2-nofp"])
    d = short_tempdir()
    with owned_core_pattern(f"{d}/core.%p", pipe_limit=0):
        pid = crash([exe, "perf", "crash"])
    perf = f"/tmp/perf-{pid}.map"
    yield d / f"core.{pid}", perf
    shutil.rmtree(d, ignore_errors=True)
    if os.path.exists(perf):
        os.unlink(perf)


def test_perf_map_of_a_dead_process_names_its_jit_frame(jit_core):
    core, perf = jit_core
    report = report_of(core)
    assert report["core"].get("perf_map") == perf, report["errors"]
    thread = crashed_thread(report)
    jit = next((f for f in thread["frames"] if f["module"] == perf), None)
    assert jit is not None and jit["function"] == "jit_function", fmt_thread(thread)
    ns = names(thread)
    assert ns[ns.index("jit_function") - 1:ns.index("jit_function") + 3] == \
        ["jit_callback", "jit_function", "run_jit", "main"], fmt_thread(thread)


def test_perf_map_touched_after_the_crash_is_refused(jit_core):
    core, perf = jit_core
    before = os.stat(perf)
    later = core.stat().st_mtime + 60
    os.utime(perf, (later, later))
    try:
        report = report_of(core)
    finally:
        os.utime(perf, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert "perf_map" not in report["core"]
    assert [e for e in report["errors"] if perf in e and "after the crash" in e], \
        report["errors"]
    assert "jit_function" not in names(crashed_thread(report))


NODE_SCRIPT = """function deep_js_frame(n) {
  if (n === 0) { process.abort(); }
  return deep_js_frame(n - 1) + 1;
}
function outer_js_frame() { return deep_js_frame(5); }
outer_js_frame();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_core_names_its_js_frames_from_the_perf_map(tmp_path):
    """A core of node run with --perf-basic-prof: its map file, left in /tmp
    by the dead process, names the JIT frames of the core's report."""
    if can_own():
        pytest.skip(can_own())
    script = tmp_path / "crash.js"
    script.write_text(NODE_SCRIPT)
    d = short_tempdir()
    try:
        with owned_core_pattern(f"{d}/core.%p", pipe_limit=0):
            pid = crash(["node", "--perf-basic-prof", "--interpreted-frames-native-stack",
                         script])
        try:
            report = report_of(d / f"core.{pid}")
        finally:
            os.unlink(f"/tmp/perf-{pid}.map")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert report["core"]["perf_map"] == f"/tmp/perf-{pid}.map", report["core"]
    js = [f for f in crashed_thread(report)["frames"] if f["module"] == f"/tmp/perf-{pid}.map"]
    names = [f["function"] for f in js]
    assert sum("deep_js_frame" in n for n in names) == 6, names
    assert any("outer_js_frame" in n for n in names), names
