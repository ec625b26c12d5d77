"""Bad input: each case gets its documented exit code and ONE line on stderr
starting with `collector: `, never a traceback (run_command fails any test
whose collector prints "Traceback").

Exit codes: 0 ok; 1 internal error; 2 usage; 3 no such process; 4 permission
denied; 5 zombie; 6 kernel thread; 7 the collector's own pid; 8 the process
exited during attach; 9 timed out.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from .helpers import NOBODY, collector_argv, collector_env, norm, proc_state, run_command

WHY = re.compile(r"root|ptrace|cap_sys_ptrace|uid|user|owner|yama", re.I)
PERMISSION = re.compile(r"permi|not allowed|denied|privilege", re.I)


def assert_one_line_error(r, code: int):
    assert r.rc == code, f"expected exit {code}\n{r}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}\n{r}"
    assert lines[0].startswith("collector: "), f"stderr must start with 'collector: '\n{r}"
    if code != 8:
        assert r.stdout.strip() == "", f"no report expected on stdout\n{r}"
    return lines[0]


def unused_pid() -> int:
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    for pid in range(pid_max - 1, 300, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    pytest.skip("no unused pid")


def test_no_such_pid(collector):
    pid = unused_pid()
    msg = assert_one_line_error(collector("attach", pid), 3)
    assert str(pid) in msg, "the message should name the pid"


def test_pid_above_pid_max(collector):
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    r = collector("attach", pid_max + 1)
    # No such process; a collector may also reject a pid the kernel can never
    # allocate as a usage error.
    assert r.rc in (2, 3), str(r)
    assert r.stderr.strip().splitlines()[-1].startswith("collector: "), str(r)


@pytest.mark.parametrize("args", [
    [],
    ["attach"],
    ["attach", "not-a-pid"],
    ["attach", "1", "--format", "xml"],
    ["attach", "1", "--max-frames", "many"],
    ["no-such-command"],
], ids=["no-args", "no-pid", "bad-pid", "bad-format", "bad-max-frames", "bad-command"])
def test_usage_errors(collector, args):
    r = collector(*args)
    assert r.rc == 2, str(r)
    # argparse-style: usage text may precede the error line, which is
    # "collector: error: ..." or, for a subcommand, "collector attach: error: ..."
    assert re.match(r"collector( attach)?: ", r.stderr.strip().splitlines()[-1]), str(r)
    assert r.stdout.strip() == "", str(r)


def test_zombie(builder, spawn, collector):
    exe = builder.build("zombie.c")
    t = spawn(exe)
    child = int(t.wait_line(r"child (\d+)").group(1))
    deadline = time.monotonic() + 5
    while proc_state(child) != "Z":
        assert time.monotonic() < deadline, "child did not become a zombie"
        time.sleep(0.01)
    msg = assert_one_line_error(collector("attach", child), 5)
    assert "zombie" in msg.lower() or "exited" in msg.lower(), msg


def test_kernel_thread(collector):
    try:
        stat = open("/proc/2/stat").read()
    except OSError:
        pytest.skip("no pid 2")
    flags = int(stat[stat.rindex(")") + 2:].split()[6])
    if not flags & 0x00200000:  # PF_KTHREAD
        pytest.skip("pid 2 is not a kernel thread here (e.g. in a pid namespace)")
    msg = assert_one_line_error(collector("attach", 2), 6)
    assert "kernel" in msg.lower(), msg


def test_own_pid():
    """The collector refuses to attach to itself: run its CLI entry point
    in-process on os.getpid()."""
    code = ("import os, sys\n"
            "sys.argv = ['collector', 'attach', str(os.getpid())]\n"
            "from collector.cli import main\n"
            "sys.exit(main())\n")
    r = run_command([sys.executable, "-c", code])
    msg = assert_one_line_error(r, 7)
    assert re.search(r"own|itself|self", msg, re.I), f"the message should say it is our own pid: {msg!r}"


def nobody_can_import_collector() -> str | None:
    """None if user nobody can run the collector's Python, else why not."""
    probe = [*SETPRIV_NOBODY, sys.executable, "-c",
             "import collector.cli, elftools, structlog"]
    r = subprocess.run(probe, env=collector_env(), capture_output=True, text=True,
                       cwd="/", timeout=60)
    if r.returncode == 0:
        return None
    return r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"rc={r.returncode}"


SETPRIV_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


@pytest.fixture
def need_setpriv():
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")


def test_not_permitted_as_unprivileged_user(builder, spawn, need_setpriv):
    """The collector run as nobody against a root-owned process: exit 4 and
    a message that says why (not root / ptrace restrictions)."""
    why_not = nobody_can_import_collector()
    if why_not:
        pytest.skip(f"user nobody cannot import the collector's Python environment here "
                    f"({sys.executable}: {why_not}); the cap_sys_ptrace test covers exit 4")
    t = spawn(builder.build("chain.c"))
    r = run_command([*SETPRIV_NOBODY, *collector_argv("attach", t.pid)])
    msg = assert_one_line_error(r, 4)
    assert PERMISSION.search(msg) and WHY.search(msg), f"the message must say why: {msg!r}"


def test_not_permitted_without_cap_sys_ptrace(builder, spawn, need_setpriv, world_dir):
    """Root without CAP_SYS_PTRACE against another user's process (the
    kernel refuses PTRACE_SEIZE: uid differs and the capability is gone):
    exit 4 and a message that says why."""
    exe = world_dir / "chain"
    shutil.copy2(builder.build("chain.c"), exe)
    os.chmod(exe, 0o755)
    t = spawn(exe, user=NOBODY)
    assert os.stat(f"/proc/{t.pid}").st_uid == NOBODY
    argv = ["setpriv", "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace",
            *collector_argv("attach", t.pid)]
    msg = assert_one_line_error(run_command(argv), 4)
    assert PERMISSION.search(msg) and WHY.search(msg), f"the message must say why: {msg!r}"


def test_process_exits_right_after_start(collector):
    """A process gone (and reaped) before the collector gets to it."""
    p = subprocess.Popen(["true"])
    reaper = threading.Thread(target=p.wait)
    reaper.start()
    r = collector("attach", p.pid)
    reaper.join()
    assert r.rc in (3, 8), str(r)
    assert_one_line_error(r, r.rc)


def any_thread_traced(pid: int) -> bool:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                if re.search(r"^TracerPid:\s*[1-9]", f.read(), re.M):
                    return True
        except OSError:
            pass
    return False


def test_process_exits_during_attach(builder, spawn, collector):
    """vfork_wait.c with 16 parked workers: with --freeze the collector holds
    every worker while it waits (--stop-timeout 10) for the main thread, which
    cannot stop (it waits in vfork). The test SIGKILLs the process in that
    window. Three rounds. Each must end in exit 8 (exited during attach) or 3
    (gone) with one line on stderr, or in exit 0 with an honest report: every
    thread either complete (walked to its root) or marked with an `error`,
    unless the report's `errors` says what was lost; never a hang."""
    exe = builder.build("vfork_wait.c")
    outcomes = []
    for _ in range(3):
        t = spawn(exe, 30, 16, parked=None)
        deadline = time.monotonic() + 5
        while proc_state(t.pid) != "D":  # the main thread is in its vfork wait
            assert time.monotonic() < deadline, "the target never entered its vfork wait"
            time.sleep(0.01)
        result = []
        attach = threading.Thread(target=lambda: result.append(
            collector("attach", "--freeze", "--stop-timeout", "10", t.pid)))
        attach.start()
        deadline = time.monotonic() + 20
        while not any_thread_traced(t.pid):
            assert time.monotonic() < deadline and attach.is_alive(), "the collector never attached"
            time.sleep(0.005)
        with open(f"/proc/{t.pid}/task/{t.pid}/children") as f:
            vfork_child = int(f.read().split()[0])
        os.kill(t.pid, signal.SIGKILL)
        os.kill(vfork_child, signal.SIGKILL)  # it holds the target's stdout open
        t0 = time.monotonic()
        attach.join(timeout=60)
        assert not attach.is_alive(), "the collector hung after its target was killed"
        assert time.monotonic() - t0 < 9, "the collector waited out its stop timeout for a dead process"
        r = result[0]
        outcomes.append(r.rc)
        if r.rc != 0:
            assert r.rc in (3, 8), f"the target exited during the attach; expected exit 8 (or 3)\n{r}"
            assert_one_line_error(r, r.rc)
            continue
        silent = []
        for th in r.report["threads"]:
            ns = [norm(f["function"]) for f in th["frames"]]
            if "main" in ns or "worker" in ns or th.get("error"):
                continue
            silent.append(f"tid {th['tid']}: {len(ns)} frames, stop_reason {th['stop_reason']!r}")
        assert not silent or r.report["errors"], (
            "the target was killed during the attach and the report (exit 0) lost frames of "
            f"{len(silent)} threads without saying so (no thread error, errors == [])\n"
            + "\n".join(silent[:5]))
    print("exit codes:", outcomes)


def test_already_traced_by_another_tracer(builder, spawn, collector):
    """Another tracer (a debugger, strace) holds the main thread: exit 4 with
    a message naming that tracer; the other tracer keeps it."""
    t = spawn(builder.build("chain.c"))
    code = ("import sys, time\n"
            "from collector.targets.ptrace_func import ptrace\n"
            "ptrace(0x4206, int(sys.argv[1]), 0, 0)\n"  # PTRACE_SEIZE
            "print('seized', flush=True)\n"
            "time.sleep(60)\n")
    other = subprocess.Popen([sys.executable, "-c", code, str(t.pid)], stdout=subprocess.PIPE,
                             text=True, env=collector_env())
    try:
        assert other.stdout.readline().strip() == "seized"
        r = collector("attach", t.pid)
        msg = assert_one_line_error(r, 4)
        assert f"traced by pid {other.pid}" in msg, msg
        with open(f"/proc/{t.pid}/status") as f:
            assert re.search(rf"^TracerPid:\s*{other.pid}$", f.read(), re.M)
    finally:
        other.kill()
        other.wait()
