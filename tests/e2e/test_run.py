"""`collector run`: the report is taken at the fatal signal-delivery-stop,
and the program's fate is unchanged (same exit status or signal, a core
dump exactly when the program alone dumps one). gdb's and eu-stack's view
of the same crash is printed beside ours (gdb runs the program; eu-stack
reads the core gdb writes at the crash)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .helpers import (REPO, collector_argv, collector_env, fmt_thread, names, run_command,
                      same_function, schema_errors)

sys.path.insert(0, str(REPO))
from bench.fallbacks import (crashed_thread, eu_stack_available, eu_stack_core,  # noqa: E402
                             gdb_available, gdb_crash, side_by_side)

CHAIN = ["inner", "middle", "outer", "main"]


def run(*argv, timeout: float = 60):
    """(result, report or None): the report is the last stdout line, since
    the program shares stdout with the collector."""
    r = run_command(collector_argv("run", "--", *argv), timeout=timeout)
    lines = r.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if report is not None:
        errors = schema_errors(report)
        assert not errors, "report does not validate:\n" + "\n".join(errors[:20])
        assert report["source"] == "run"
    return r, report


def direct(*argv) -> int:
    """The raw wait status of the program run on its own."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    _, status = os.waitpid(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return status


def assert_same_fate(r, status: int):
    """Exit code mirrored: the program's, or 128+N for death by signal N."""
    code = os.waitstatus_to_exitcode(status)
    assert r.rc == (code if code >= 0 else 128 - code), f"alone: status {status:#x}\n{r}"


def test_a_core_is_dumped_as_without_the_collector(builder):
    # Whether a core is dumped depends on kernel.core_pattern, which other
    # tests on this machine may change meanwhile: a few pairs of runs, one
    # of which must agree, and the pairs are printed.
    exe = builder.build("crash.c")
    pairs = []
    for _ in range(3):
        alone = bool(os.WCOREDUMP(direct(exe, "null")))
        r, _ = run(exe, "null")
        pairs.append((alone, "(core dumped)" in r.stderr))
        if pairs[-1][0] == pairs[-1][1]:
            break
    print(f"(alone, under collector run) core dumped: {pairs}")
    assert pairs[-1][0] == pairs[-1][1], pairs


def base(name: str | None) -> str | None:
    """inner.cold is inner: gcc splits cold paths into their own symbol."""
    return name.split(".")[0] if name else name


def print_beside(report: dict, argv: list[str], tmp_path):
    core = str(tmp_path / "core")
    gdb = gdb_crash(argv, core) if gdb_available() else []
    eu = eu_stack_core(core, argv[0]) if eu_stack_available() and os.path.exists(core) else []
    print(f"{' '.join(map(str, argv))}:\n" + side_by_side(crashed_thread(report)["frames"], gdb, eu))


@pytest.mark.parametrize("mode", ["null", "garbage", "heap"])
def test_call_through_a_bad_pointer_reaches_main(builder, tmp_path, mode):
    exe = builder.build("crash.c")
    r, report = run(exe, mode)
    assert report is not None, str(r)
    assert_same_fate(r, direct(exe, mode))
    thread = crashed_thread(report)
    assert thread["tid"] == report["process"]["pid"], fmt_thread(thread)
    sig = report["signal"]
    assert (sig["number"], sig["name"]) == (signal.SIGSEGV, "SIGSEGV")
    frames = thread["frames"]
    # the pc is where the call went: nowhere the program maps as code
    assert frames[0]["pc"] == thread["registers"]["rip"] == sig["si_addr"], fmt_thread(thread)
    assert frames[0]["module"] is None, fmt_thread(thread)
    assert frames[1]["method"] == "dummy_fde", fmt_thread(thread)
    assert [base(n) for n in names(thread)[1:5]] == CHAIN, fmt_thread(thread)
    assert thread["methods"]["dummy_fde"] == 1
    print_beside(report, [exe, mode], tmp_path)


def test_abort_is_reported_with_its_callers(builder, tmp_path):
    exe = builder.build("crash.c")
    r, report = run(exe, "abort")
    assert report is not None, str(r)
    assert_same_fate(r, direct(exe, "abort"))
    assert report["signal"]["name"] == "SIGABRT"
    thread = crashed_thread(report)
    ns = [base(n) for n in names(thread)]
    at_abort = [i for i, f in enumerate(thread["frames"])
                if f["function"] and same_function(f["function"], "abort", f["module"])]
    assert at_abort, fmt_thread(thread)   # glibc's abort, under any of its names
    i = ns.index("inner")
    assert at_abort[0] < i and ns[i:i + 4] == CHAIN, fmt_thread(thread)
    print_beside(report, [exe, "abort"], tmp_path)


def test_a_handler_that_returns_to_the_fault_is_reported_at_the_fatal_delivery(builder):
    # The first SIGSEGV is caught (no report: the program might recover); the
    # handler resets it to the default and returns, the write faults again.
    exe = builder.build("crash.c")
    r, report = run(exe, "rethrow")
    assert report is not None, str(r)
    assert r.stdout.count("handled") == 1, r.stdout
    assert_same_fate(r, direct(exe, "rethrow"))
    assert [base(n) for n in names(crashed_thread(report))[:4]] == CHAIN


def test_a_program_that_recovers_from_sigsegv_has_no_report(builder):
    exe = builder.build("crash.c")
    r, report = run(exe, "recover")
    assert report is None and r.rc == 0, str(r)
    assert "recovered" in r.stdout


def test_a_program_that_exits_0_has_no_report(builder):
    exe = builder.build("crash.c")
    r, report = run(exe, "exit0")
    assert report is None and r.rc == 0, str(r)
    assert "exited with status 0" in r.stderr


def test_the_exit_status_is_mirrored():
    r, report = run("sh", "-c", "exit 7")
    assert report is None and r.rc == 7, str(r)


def test_non_fatal_signals_pass_through_and_a_non_crash_death_is_mirrored():
    script = 'trap "echo got-usr1" USR1; kill -USR1 $$; kill -TERM $$; sleep 5'
    r, report = run("sh", "-c", script)
    assert "got-usr1" in r.stdout, str(r)
    assert report is None and r.rc == 128 + signal.SIGTERM, str(r)


def test_a_crash_in_a_thread_marks_that_thread(builder):
    exe = builder.build("crash.c")
    r, report = run(exe, "thread")
    assert report is not None, str(r)
    assert_same_fate(r, direct(exe, "thread"))
    main, crasher = report["threads"]
    assert main["tid"] == report["process"]["pid"] and "crashed" not in main
    assert crasher["crashed"] is True and crasher["name"] == "crasher", fmt_thread(crasher)
    assert [base(n) for n in names(crasher)[1:5]] == ["inner", "middle", "outer",
                                                      "crasher_main"], fmt_thread(crasher)
    assert crasher["frames"][1]["method"] == "dummy_fde"
    assert "main" in names(main), fmt_thread(main)   # held in pthread_join, unwound too


def test_a_signal_sent_to_the_collector_goes_to_the_program():
    proc = subprocess.Popen(collector_argv("run", "--", "sleep", "30"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=collector_env())
    try:
        deadline = time.monotonic() + 10
        while "sleep" not in _children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert not out.strip() and b"killed by SIGTERM" in err


def _children(pid: int) -> list[str]:
    """The names of a process's children (once exec'd, the program's)."""
    out = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            for child in f.read().split():
                with open(f"/proc/{child}/comm") as c:
                    out.append(c.read().strip())
    except OSError:
        pass
    return out


def test_a_program_that_cannot_be_run():
    r, report = run("/nonexistent/program")
    assert r.rc == 127 and report is None
    assert "cannot run" in r.stderr
