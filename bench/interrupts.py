"""The collector ended at random moments, and multi-threaded crashes under
`collector run` (issue 11: every crash gets a report, no hang, no lost
report, no target left stuck).

Interrupts: SIGKILL, SIGTERM or SIGINT at a random moment to `attach`,
`attach --freeze`, `watch` (of a running or a SIGSTOPped process), `run`
(of a running, a stopped or a crashing program) and the core handler
(`core --from-kernel` fed a core on stdin). After each: the collector ended
(else a hang), no thread of the target is traced and each is as it was
(running, or T if stopped; a crashing program is gone), and every report
is whole JSON or absent (file sink, stdout, --output).

Crashes: `collector run` of a program whose main thread segfaults while 4
threads spin, one whose 4th thread calls abort(), and a Rust release build
with panic=abort panicking in a worker (if rustc is installed): a report
each time, the crashing thread marked `crashed`, the right signal.

    python bench/interrupts.py [--iterations 120] [--crashes 20] [--budget 900] [--seed N]
                               [--only 'run stopped']

One line per failure, then the totals; exit status 1 if anything failed.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
HANG_S = 10.0        # a collector not gone this long after its signal hangs
SETTLE_S = 1.0       # a target must be untraced this soon after the collector ends
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
# (command, what the target is doing, the longest useful delay before the signal, s)
CASES = [("attach", "running", 1.0), ("attach", "stopped", 1.0),
         ("attach --freeze", "running", 1.0), ("attach --freeze", "stopped", 1.0),
         ("watch", "running", 1.5), ("watch", "stopped", 1.5),
         ("run", "running", 1.5), ("run", "stopped", 1.5), ("run", "crashing", 1.5),
         ("core", "core", 0.8)]
CRASHES = [("main", signal.SIGSEGV, "main"), ("abort", signal.SIGABRT, "crasher"),
           ("rust", signal.SIGABRT, "crasher")]


class Bench:
    """Fixture programs, a configuration with a file sink, and the environment."""

    def __init__(self, work: Path):
        self.work = work
        self.threads = work / "threads_crash"
        cc = ["gcc", "-pthread", "-O2", "-I", str(FIXTURES), str(FIXTURES / "threads_crash.c"),
              "-o", str(self.threads)]
        subprocess.run(cc, check=True, capture_output=True)
        self.rust = build_rust(work)
        self.sink = work / "reports.jsonl"
        config = work / "collector.toml"
        config.write_text(f'[collector]\nstate_dir = "{work}/state"\n[spool]\ndir = "{work}/spool"\n'
                          f'[[sink]]\ntype = "stdout"\n[[sink]]\ntype = "file"\npath = "{self.sink}"\n')
        self.env = dict(os.environ, PYTHONPATH=str(REPO), COLLECTOR_CONFIG=str(config))
        self.env.pop("DEBUGINFOD_URLS", None)
        self.core = work / "core.nap"
        self._make_core()

    def _make_core(self) -> None:
        target = self.start_target("nap")
        try:
            subprocess.run(["gdb", "-q", "-batch", "-ex", f"gcore {self.core}", "-p",
                            str(target.pid)], capture_output=True, timeout=120)
        finally:
            target.kill()
            target.wait()

    def start_target(self, mode: str) -> subprocess.Popen:
        p = subprocess.Popen([str(self.threads), mode], stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        if p.stdout.readline() != b"ready\n":
            raise RuntimeError(f"{self.threads} {mode} did not start")
        return p

    def collector(self, args: list[str], stdout, stdin=subprocess.DEVNULL) -> subprocess.Popen:
        """stdout and stderr are files: a program `run` leaves running keeps them open."""
        err = tempfile.TemporaryFile()
        c = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "collector", *args],
                             stdin=stdin,
                             stdout=stdout, stderr=err, env=self.env, cwd=self.work,
                             start_new_session=True)
        c.err = err
        return c


def finish(c: subprocess.Popen, timeout: float) -> tuple[bytes, bool]:
    """The collector's stderr once it has ended, and whether it hung (then
    SIGABRT makes faulthandler say where, and SIGKILL ends it)."""
    hung = False
    try:
        c.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = True
        c.send_signal(signal.SIGABRT)
        try:
            c.wait(timeout=2)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
    c.err.seek(0)
    err = c.err.read()
    c.err.close()
    return err, hung


def build_rust(work: Path) -> Path | None:
    """tests/fixtures/panic_thread.rs as a release build with panic=abort."""
    rustc = shutil.which("rustc") or shutil.which(os.path.expanduser("~/.cargo/bin/rustc"))
    if rustc is None:
        return None
    out = work / "panic_thread"
    r = subprocess.run([rustc, "--edition", "2021", "-C", "opt-level=3", "-C", "panic=abort",
                        "-o", str(out), str(FIXTURES / "panic_thread.rs")], capture_output=True)
    return out if r.returncode == 0 else None


def threads_of(pid: int) -> dict[int, tuple[str, str]]:
    """tid -> (State letter, TracerPid); empty once the process is gone or reaped."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        out[int(tid)] = (fields["State"].split()[0], fields["TracerPid"].strip())
    return out


def left_wrong(pid: int, want: str) -> str | None:
    """Why the target is not as it should be SETTLE_S after the collector ended."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        threads = threads_of(pid)
        if want == "gone":
            bad = {t: s for t, s in threads.items() if s[0] not in ("Z", "X")}
        else:
            ok = ("T",) if want == "stopped" else ("R", "S")
            bad = {t: s for t, s in threads.items() if s[1] != "0" or s[0] not in ok}
            if not threads:
                return "the target is gone"
        if not bad:
            return None
        if time.monotonic() > deadline:
            return f"want {want}: (state, tracer) by thread {bad}"
        time.sleep(0.01)


def whole(path: Path) -> str | None:
    """None if every line of `path` that starts a JSON object is one."""
    if not path.exists():
        return None
    for line in path.read_bytes().splitlines():
        if line.startswith(b"{"):
            try:
                json.loads(line)
            except ValueError:
                return f"{path.name}: half a report ({len(line)} bytes)"
    return None


def set_subreaper() -> None:
    """Programs orphaned by a killed `collector run` become our children."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def program_of(pid: int, exe: Path) -> int | None:
    """The child of `pid` that runs `exe`, once exec'd (the collector has
    other children for a moment: python-ptrace runs ldconfig)."""
    for child in children(pid):
        try:
            if os.readlink(f"/proc/{child}/exe") == str(exe.resolve()):
                return child
        except OSError:
            pass
    return None


def interrupt_once(b: Bench, case, sig: int, delay: float, n: int) -> dict:
    """One collector ended by `sig` `delay` s after its start: the outcome."""
    command, doing, _ = case
    out = b.work / f"stdout-{n}"
    report_file = b.work / f"core-{n}.json"
    target, program = None, None
    stdin = subprocess.DEVNULL
    if command == "core":
        stdin = open(b.core, "rb")
        args = ["core", "--from-kernel", "e=threads_crash", "s=11", "--output", str(report_file)]
    elif command == "run":
        args = ["run", "--", str(b.threads), "main" if doing == "crashing" else "nap"]
    else:
        target = b.start_target("nap")
        if doing == "stopped":
            os.kill(target.pid, signal.SIGSTOP)
            while threads_of(target.pid) and any(s[0] != "T" for s in threads_of(target.pid).values()):
                time.sleep(0.005)
        args = [*command.split(), str(target.pid)]
    with open(out, "wb") as f:
        c = b.collector(args, f, stdin)
    if stdin is not subprocess.DEVNULL:
        stdin.close()
    t_end = time.monotonic() + delay
    while time.monotonic() < t_end and c.poll() is None:
        if command == "run" and program is None:
            program = program_of(c.pid, b.threads)
            if program is not None and doing == "stopped":
                os.kill(program, signal.SIGSTOP)
        time.sleep(0.002)
    if command == "run" and program is None:
        program = program_of(c.pid, b.threads)
    if c.poll() is None:
        c.send_signal(sig)
    outcome = {"case": f"{command} {doing}", "signal": signal.Signals(sig).name,
               "delay": round(delay, 3), "failures": []}
    err, hung = finish(c, HANG_S)
    if hung:
        outcome["failures"].append("hang: " + err.decode(errors="replace")[-1500:])
    outcome["rc"] = c.returncode
    if b"Traceback" in err and not hung:
        text = err.decode(errors="replace")
        if str(REPO / "collector") in text:
            outcome["failures"].append("traceback: " + text[-1500:])
        else:  # SIGINT while Python itself starts, before the collector's first line
            outcome["startup_tracebacks"] = 1
    if command == "run" and program is None:   # killed before its fork, or then orphaned
        program = program_of(os.getpid(), b.threads)
    pid = target.pid if target else program
    if pid is not None:
        want = "gone" if doing == "crashing" else doing
        if doing == "stopped" and command == "run" and pid == program and not stopped_in_time(pid):
            want = "running"   # the SIGSTOP came too late to land
        if command == "run" and b" was killed by " in err:
            want = "gone"      # a signal passed on before the program could ignore it
        why = left_wrong(pid, want)
        if why:
            outcome["failures"].append(why)
    for path in (out, report_file):
        why = whole(path)
        if why:
            outcome["failures"].append(why)
    outcome["temp_files"] = len(list(b.work.glob(".tmp-*")))
    for p in [target.pid] if target else []:
        _kill(p)
    if target:
        target.wait()
    for p in children(os.getpid()):   # run's program, ours as subreaper
        _kill(p)
    out.unlink(missing_ok=True)
    report_file.unlink(missing_ok=True)
    return outcome


def stopped_in_time(pid: int) -> bool:
    return any(s[0] == "T" for s in threads_of(pid).values())


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def interrupts(b: Bench, iterations: int, rng: random.Random, until: float,
               only: str = "") -> list[dict]:
    cases = [c for c in CASES if only in f"{c[0]} {c[1]}"]
    out = []
    for n in range(iterations):
        if time.monotonic() > until:
            break
        case = cases[n % len(cases)]
        out.append(interrupt_once(b, case, rng.choice(SIGNALS), rng.uniform(0, case[2]), n))
    half = whole(b.sink)
    if half:
        out.append({"case": "file sink", "signal": "-", "delay": 0, "rc": None,
                    "failures": [half], "temp_files": 0})
    return out


def crash_once(b: Bench, kind: str, sig: int, crasher: str) -> list[str]:
    """`collector run` of one multi-threaded crash: what is wrong with it."""
    argv = [str(b.rust)] if kind == "rust" else [str(b.threads), kind]
    with tempfile.TemporaryFile() as f:
        c = b.collector(["run", "--symbolize-budget", "0", "--", *argv], f)
        err, hung = finish(c, HANG_S * 3)
        if hung:
            return ["hang: " + err.decode(errors="replace")[-1500:]]
        f.seek(0)
        lines = [l for l in f.read().splitlines() if l.startswith(b"{")]
    if c.returncode != 128 + sig:
        return [f"exit {c.returncode}, not {128 + sig}: {err.decode(errors='replace')[-300:]}"]
    if not lines:
        return ["no report"]
    report = json.loads(lines[-1])
    crashed = [t for t in report["threads"] if t.get("crashed")]
    wrong = []
    if report.get("signal", {}).get("number") != sig:
        wrong.append(f"signal {report.get('signal')}")
    if len(crashed) != 1 or crashed[0].get("name") != (crasher if kind != "main" else
                                                      report["process"]["name"]):
        wrong.append(f"crashed threads: {[(t['tid'], t.get('name')) for t in crashed]}")
    if kind == "main" and crashed and crashed[0]["tid"] != report["process"]["pid"]:
        wrong.append("the main thread crashed but another is marked")
    return wrong


def crashes(b: Bench, runs: int, until: float) -> dict[str, list]:
    out: dict[str, list] = {}
    for kind, sig, crasher in CRASHES:
        if kind == "rust" and b.rust is None:
            continue
        out[kind] = []
        for _ in range(runs):
            if time.monotonic() > until:
                break
            out[kind].append(crash_once(b, kind, sig, crasher))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=120)
    ap.add_argument("--crashes", type=int, default=20, help="runs of each crash")
    ap.add_argument("--budget", type=float, default=900, help="seconds at most, in all")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", default="", help="only the cases whose name has this in it")
    opts = ap.parse_args()
    seed = opts.seed if opts.seed is not None else random.randrange(1 << 30)
    until = time.monotonic() + opts.budget
    set_subreaper()
    with tempfile.TemporaryDirectory(prefix="collector-interrupts-") as d:
        b = Bench(Path(d))
        got = interrupts(b, opts.iterations, random.Random(seed), until, opts.only)
        crashed = crashes(b, opts.crashes, until)
    bad = 0
    for o in got:
        for why in o["failures"]:
            bad += 1
            print(f"FAIL {o['case']} {o['signal']} after {o['delay']} s (rc {o['rc']}): {why}")
    for kind, runs in crashed.items():
        for i, wrong in enumerate(runs):
            for why in wrong:
                bad += 1
                print(f"FAIL run {kind} #{i}: {why}")
    kinds = lambda word: sum(word in why for o in got for why in o["failures"])  # noqa: E731
    print(f"seed {seed}: {len(got)} interrupts: {kinds('hang')} hangs, "
          f"{kinds('want ')} targets left stopped/traced/running, {kinds('half a report')} "
          f"half-written reports, {kinds('traceback')} tracebacks in the collector "
          f"({sum(o.get('startup_tracebacks', 0) for o in got)} more in Python's start-up, "
          f"before the collector's first line); "
          f"{max((o['temp_files'] for o in got), default=0)} temp files left at most")
    for kind, runs in crashed.items():
        print(f"run {kind}: {len(runs)} runs, {sum('hang' in w for w in runs)} hangs, "
              f"{sum(bool(w) for w in runs)} wrong")
    rcs: dict[str, set] = {}
    for o in got:
        rcs.setdefault(o["signal"], set()).add(o["rc"])
    print("exit codes by signal:", {k: sorted(v, key=str) for k, v in rcs.items()})
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
