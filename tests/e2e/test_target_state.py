"""The target is left as it was found, and the report's contents and formats:
a running target keeps running, a stopped one stays stopped, a signal to the
collector mid-run leaves the target running, the report validates and its
metadata matches /proc and the ELF files, `--format text` is eu-stack-like."""
from __future__ import annotations

import copy
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import time
import tomllib

import pytest

from .helpers import (REPO, assert_chain, assert_frame_invariants, assert_thread_order, build_id, collector_argv, collector_env,
                      fmt_thread, load_bias, names, proc_state, read_status, same_path,
                      schema_errors, thread_by_tid)

HB = r"hb (\d+)"


def assert_released(pid: int, states=("S", "R")):
    """No thread of `pid` is traced, and each is in one of `states`."""
    for tid in sorted(os.listdir(f"/proc/{pid}/task")):
        try:
            st = read_status(pid, int(tid))
            state = proc_state(pid, int(tid))
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that exited meanwhile
        assert st["TracerPid"] == "0", f"thread {tid} still traced by {st['TracerPid']}"
        assert state in states, f"thread {tid} state {state!r}, expected one of {states}"


def heartbeats(target) -> list[tuple[float, int]]:
    return [(ts, int(m.group(1))) for ts, l in list(target.lines) if (m := re.fullmatch(HB, l))]


def max_gap_ms(beats, t0, t1) -> float:
    ts = [t for t, _ in beats if t0 <= t <= t1]
    return max((b - a for a, b in zip(ts, ts[1:])), default=0.0) * 1000


def test_running_target_keeps_running(builder, spawn, collector):
    exe = builder.build("heartbeat.c")
    t = spawn(exe, parked=None)
    t.wait_line(r"hb 5")
    t0 = time.monotonic()
    r = collector("attach", t.pid)
    t1 = time.monotonic()
    assert r.rc == 0, str(r)
    # it kept running: a new heartbeat within 200 ms of the collector exiting
    t.wait_line(HB, timeout=0.2, after=t1)
    assert_released(t.pid)
    assert "EINTR" not in t.output(), "a sleep in the target was interrupted by the attach"
    beats = heartbeats(t)
    nums = [n for _, n in beats]
    assert nums == list(range(len(nums))), "heartbeat sequence has a gap or restart"

    main = thread_by_tid(r.report, t.pid)
    assert_frame_invariants(main)
    ns = names(main)
    assert "main" in ns and "hb_loop" in ns, fmt_thread(main)
    assert ns[ns.index("hb_loop") + 1] == "main", fmt_thread(main)
    # the heartbeat was interrupted no longer than the report says it held
    # the target (10 ms sleep + scheduling slack on top of stopped_ms)
    stopped = r.report["timings"]["stopped_ms"]
    gap = max_gap_ms(beats, t0, t1 + 0.2)
    print(f"stopped_ms={stopped:.1f} longest heartbeat gap={gap:.1f} ms wall={r.wall_s * 1000:.0f} ms")
    assert 0 <= stopped <= r.wall_s * 1000
    assert gap <= stopped + 250, f"heartbeat gap {gap:.0f} ms but the report says stopped {stopped:.0f} ms"


def test_stopped_target_stays_stopped(builder, spawn, collector):
    exe = builder.build("heartbeat.c")
    t = spawn(exe, parked=None)
    t.wait_line(r"hb 3")
    os.kill(t.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while proc_state(t.pid) != "T":
        assert time.monotonic() < deadline, "target did not stop"
        time.sleep(0.01)
    time.sleep(0.05)
    assert all(proc_state(t.pid, tid) == "T" for tid in t.tids())
    n_before = len(t.output())

    r = collector("attach", t.pid)
    assert r.rc == 0, str(r)
    assert_released(t.pid, states=("T",))
    time.sleep(0.3)
    assert_released(t.pid, states=("T",))
    assert len(t.output()) == n_before, f"the stopped target ran: {t.output()[n_before:]}"

    assert r.report["process"]["state"] == "stopped", r.report["process"]
    main = thread_by_tid(r.report, t.pid)
    assert main["state"] == "T", fmt_thread(main)
    assert_frame_invariants(main)
    ns = names(main)
    assert "hb_loop" in ns and "main" in ns, f"no frames for a stopped target\n{fmt_thread(main)}"

    # and it is an ordinary group-stop: SIGCONT resumes it
    os.kill(t.pid, signal.SIGCONT)
    t.wait_line(HB, timeout=1.0, after=time.monotonic())
    assert_released(t.pid)
    assert "EINTR" not in t.output()


def tracer_of(pid: int) -> int:
    try:
        return int(read_status(pid)["TracerPid"])
    except (OSError, KeyError, ValueError):
        return 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", ["attached", "released"])
def test_signal_to_collector_leaves_target_running(builder, spawn, sig, phase):
    """SIGINT/SIGTERM to the collector while it holds the target ("attached":
    sent the moment the target shows it as tracer) or right after it let go
    ("released": unwinding, printing). Three rounds each. Whatever the
    collector then does, the target must end up untraced and running, and
    no traceback may appear."""
    exe = builder.build("heartbeat.c")
    t = spawn(exe, 48, parked=None)  # 48 parked threads: a hold of a few ms
    t.wait_line(r"hb 3")
    argv = collector_argv("attach", t.pid)
    hits = 0
    for _ in range(3):
        # stdout to /dev/null: an unread pipe would block the collector's
        # output while we poll
        p = subprocess.Popen(argv, env=collector_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        seen = sent = False
        while p.poll() is None and time.monotonic() < deadline:
            tracer = tracer_of(t.pid)
            if tracer == p.pid:
                seen = True
                if phase == "attached":
                    break
            elif seen and phase == "released":
                break
        if p.poll() is None and seen:
            p.send_signal(sig)
            sent = True
            hits += 1
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            pytest.fail(f"collector still running 30 s after {sig.name}")
        err = err.decode(errors="replace")
        print(f"{sig.name} {phase}: sent={sent} rc={p.returncode} stderr={err.strip()[:200]!r}")
        assert "Traceback" not in err, err
        if sent and p.returncode != 0:
            lines = err.strip().splitlines()
            assert len(lines) <= 1 and all(l.startswith("collector: ") for l in lines), (
                f"after {sig.name}: expected at most one 'collector: ' line on stderr\n{err}")
        assert_released(t.pid)
        t.wait_line(HB, timeout=0.5, after=time.monotonic())
    assert "EINTR" not in t.output()
    if not hits:
        pytest.skip(f"the collector was never caught {phase} in 3 runs")


def test_threads_appearing_and_vanishing_during_attach(builder, spawn, collector):
    """churn.c: threads are created and exit all the time while the main
    thread is parked. Three attaches: each succeeds, the parked chain is
    right, every reported thread has frames or says why not, and afterwards
    no thread is left traced or stopped and the spawner keeps spawning."""
    exe = builder.build("churn.c")
    t = spawn(exe, parked=None)
    spawner_tid = int(t.wait_line(r"spawner (\d+)").group(1))
    t.wait_line(r"spawned \d+")
    for _ in range(3):
        r = collector("attach", t.pid)
        assert r.rc == 0, str(r)
        assert_thread_order(r.report, t.pid)
        assert_chain(thread_by_tid(r.report, t.pid), ["park", "c", "b", "a", "main"])
        spawner = thread_by_tid(r.report, spawner_tid)
        assert "spawner" in names(spawner), fmt_thread(spawner)
        for th in r.report["threads"]:
            if th.get("error"):
                continue
            assert th["frames"], f"thread with no frames and no error\n{fmt_thread(th)}"
            # the spawner may be caught inside clone3 right at its syscall, where
            # glibc has already ended the FDE: the caller is found by dummy FDE
            assert_frame_invariants(th, methods_after_0=("cfi", "dummy_fde"))
        assert_released(t.pid)
        t.wait_line(r"spawned \d+", timeout=2.0, after=time.monotonic())


# ----------------------------------------------------------- report contents


def pyproject_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_report_metadata(builder, spawn, collector):
    exe = builder.build("chain.c", "pie")
    t = spawn(exe, 2)
    r = collector("attach", t.pid)
    assert r.rc == 0, str(r)
    rep = r.report
    assert schema_errors(rep) == []
    # the validator is not vacuous: a broken report fails it
    broken = copy.deepcopy(rep)
    del broken["threads"][0]["frames"][0]["pc"]
    broken["timings"] = {}
    assert len(schema_errors(broken)) >= 2

    assert rep["schema_version"] == 1
    assert rep["collector"]["version"] == pyproject_version()
    when = dt.datetime.fromisoformat(rep["time"].replace("Z", "+00:00"))
    assert when.tzinfo is not None, "time must carry its UTC offset"
    assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 120
    assert rep["host"]["hostname"] == socket.gethostname()
    assert rep["host"]["kernel"] == os.uname().release

    p = rep["process"]
    assert p["pid"] == t.pid
    assert same_path(p["exe"], exe)
    assert p["cmdline"] == [str(exe), "2"]
    assert p["uid"] == os.getuid() and p["gid"] == os.getgid()
    assert p["state"] == "sleeping", p
    assert rep["errors"] == [], rep["errors"]
    assert rep["timings"]["stopped_ms"] >= 0 and rep["timings"]["unwind_ms"] >= 0

    # modules: the executable and libc, with the build-ids of the files and
    # the load bias /proc/PID/maps gives; every frame lies inside a module
    mods = rep["modules"]
    for path in (exe, "/usr/lib/x86_64-linux-gnu/libc.so.6"):
        ms = [m for m in mods if same_path(m["path"], path)]
        assert ms, f"{path} not in modules {[m['path'] for m in mods]}"
        for m in ms:
            assert m["build_id"] == build_id(path), m
            assert m["load_bias"] == load_bias(t.pid, path), m
            assert m["start"] < m["end"], m
    for th in rep["threads"]:
        for f in th["frames"]:
            inside = [m for m in mods if m["start"] <= f["pc"] < m["end"]]
            assert inside, f"#{f['index']} pc {f['pc']:#x} in no module\n{fmt_thread(th)}"
            assert any(m["path"] == f["module"] and m["build_id"] == f["build_id"] for m in inside), (
                f"#{f['index']} module/build_id disagree with the module list\n{fmt_thread(th)}")
        for reg in ("rip", "rsp", "rbp"):
            assert reg in th["registers"], f"register {reg} missing\n{fmt_thread(th)}"


TEXT_FRAME = re.compile(r"#(\d+)\s+0x([0-9a-f]+)\s+(.*)")


def parse_text(text: str) -> dict[int, tuple[str, list[tuple[int, int, str]]]]:
    """{tid: (name, [(index, pc, rest-of-line)])} from --format text."""
    out: dict[int, tuple[str, list]] = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r'TID (\d+) "(.*)":\s*$', line)
        if m:
            cur = []
            out[int(m.group(1))] = (m.group(2), cur)
            continue
        m = TEXT_FRAME.match(line.strip())
        if m:
            assert cur is not None, f"frame line before any TID header: {line!r}"
            cur.append((int(m.group(1)), int(m.group(2), 16), m.group(3)))
    return out


def text_function(rest: str) -> str | None:
    """`park+0x1f (/path/exe)` -> `park`."""
    m = re.match(r"(\S+?)(?:\+0x[0-9a-f]+)?\s+\((.*)\)(?:\s+\[[^\]]*\])*\s*$", rest)
    return m.group(1).split("@")[0] if m else None


def test_text_format(builder, spawn, collector):
    exe = builder.build("chain.c")
    t = spawn(exe, 1)
    r = collector("attach", t.pid, "--format", "text")
    assert r.rc == 0, str(r)
    print(r.text)
    parsed = parse_text(r.text)
    assert set(parsed) == set(t.tids()), f"TID headers {sorted(parsed)} != tasks {t.tids()}"
    assert list(parsed)[0] == t.pid, "main thread must come first"
    assert sum(1 for line in r.text.splitlines() if line.startswith("#0 ")) == len(parsed)
    for tid, (name, frames) in parsed.items():
        assert name == open(f"/proc/{t.pid}/task/{tid}/comm").read().strip()
        assert [i for i, _, _ in frames] == list(range(len(frames)))
        for _, _, rest in frames:
            assert re.search(r"\(.+\)(\s+\[[^\]]*\])*\s*$", rest), f"no (module) on frame line: {rest!r}"
        fns = [text_function(rest) for _, _, rest in frames]
        root = "main" if tid == t.pid else "worker"
        chain = ["park", "c", "b", "a", root]
        assert chain[0] in fns, fns
        k = fns.index("park")
        assert fns[k:k + 5] == chain, fns
        for _, _, rest in frames[k:k + 5]:
            assert re.match(r"\S+\+0x[0-9a-f]+ \(", rest), f"expected function+0xOFF: {rest!r}"

    # same parked process, same stacks as the JSON report
    j = collector("attach", t.pid)
    assert j.rc == 0, str(j)
    for th in j.report["threads"]:
        assert [f["pc"] for f in th["frames"]] == [pc for _, pc, _ in parsed[th["tid"]][1]]


def test_version_and_help(collector):
    v = collector("--version")
    assert v.rc == 0, str(v)
    assert pyproject_version() in v.stdout + v.stderr
    h = collector("--help")
    assert h.rc == 0, str(h)
    assert "attach" in h.stdout
    ah = collector("attach", "--help")
    assert ah.rc == 0, str(ah)
    for opt in ("--format", "--max-frames", "--stack-window"):
        assert opt in ah.stdout, f"{opt} not in `attach --help`"


def wait_in_vfork(pid: int) -> None:
    """Until the main thread is in its uninterruptible vfork wait."""
    deadline = time.monotonic() + 5
    while proc_state(pid) != "D":
        assert time.monotonic() < deadline, f"pid {pid} never entered its vfork wait"
        time.sleep(0.01)


@pytest.mark.parametrize("mode", [(), ("--freeze",)])
def test_a_thread_that_cannot_stop_times_out(builder, spawn, collector, mode):
    """vfork_wait.c: the main thread waits in vfork (state D: PTRACE_INTERRUPT
    cannot stop it). The collector gives up on it after --stop-timeout, still
    reports the worker, and the target is released and runs on."""
    t = spawn(builder.build("vfork_wait.c"), 3, parked=None)
    wait_in_vfork(t.pid)
    t0 = time.monotonic()
    r = collector("attach", "--stop-timeout", "0.3", *mode, t.pid)
    assert r.rc == 0, str(r)
    assert time.monotonic() - t0 < 2.5, "the collector waited past its --stop-timeout"
    main = thread_by_tid(r.report, t.pid)
    assert "did not stop in time" in (main.get("error") or ""), fmt_thread(main)
    worker = [th for th in r.report["threads"] if th["tid"] != t.pid]
    assert_chain(worker[0], ["park", "c", "b", "a", "worker"])
    assert read_status(t.pid)["TracerPid"] == "0"
    t.wait_line(r"after", timeout=10.0)  # the vfork child is gone: main runs again


def test_no_thread_can_stop_is_exit_9(builder, spawn, collector):
    t = spawn(builder.build("vfork_wait.c"), 3, 0, parked=None)
    wait_in_vfork(t.pid)
    r = collector("attach", "--stop-timeout", "0.3", t.pid)
    assert r.rc == 9, str(r)
    assert r.stderr.startswith("collector: ") and "stop" in r.stderr, str(r)
    assert read_status(t.pid)["TracerPid"] == "0"
    t.wait_line(r"after", timeout=10.0)
