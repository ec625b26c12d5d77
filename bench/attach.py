#!/usr/bin/env python3
"""Side-by-side benchmark: `collector attach` vs `eu-stack -p` vs
`gdb -batch -ex 'thread apply all bt'` against the same live targets.

    python bench/attach.py [--runs 5] [--no-gdb] [--pin] [--fifo] [--service] [--json results.json]
                           [--only threads,deep,node]

Targets (compiled from bench/attach_target.c into a temp dir at run time):

1. 50 threads parked 20 frames deep plus one spinning thread that reads
   CLOCK_MONOTONIC in a tight loop and records the longest gap between two
   readings in a shared file: how long *it* was held stopped by the tool.
   Before each tool run the bench resets that maximum, so every run is
   measured on its own. Rows: wall time (median), held-stopped time
   (median), ratios to eu-stack.
2. The main thread parked 10,000 frames deep: wall time of each tool.
3. node (about 11 threads, JIT code), when node is installed.

Each collector run has a fresh state directory (no store or disk cache of
an earlier run), but for the "disk cache filled" row, whose runs share one.

--service also starts `collector serve --control` (the resident service,
warmed by the uncounted round) and adds rows for `collector attach` through
it; every other collector row runs in-process (--no-service), cold.

Every table also gives each tool's CPU time (user + system of its process
and children, median; through the service the client's only): steadier than
the wall time on a machine other work shares.

The tools run round-robin (one warm-up round not counted), so drifts in the
machine's load hit them alike (issue 13's targets: wall <= 2.5x, held <=
1.2x, deep wall <= 4x eu-stack); --fifo runs each tool SCHED_FIFO (root), so
that on a loaded machine it is not kept waiting for a cpu. The checkout's
modules are compiled to bytecode first, as an installed collector's are. Targets from issue 3: held <= 0.5x eu-stack,
wall <= 1.5x eu-stack (50 threads), wall <= 1x eu-stack (10,000 frames).
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serving import start_serve

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHM = struct.Struct("<5Q")  # reset_seq, ack_seq, max_gap_ns, loops, max_other_ns (attach_target.c)
TOOL_TIMEOUT = 120
CASES = ("threads", "deep", "node")


CONTROL = {"path": "", "pid": 0}  # the bench's own service, with --service ("": none)
# The collector's state directory (its store, and the symbolizer's disk
# cache by build-id): a fresh one for each run, so that a cold run is cold,
# except for the rows named CACHED, which share one that earlier runs filled.
STATE = {"dir": ""}
CACHED = "disk cache filled"


def tool_env(state: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["COLLECTOR_CONTROL"] = CONTROL["path"]
    # never the current directory (mkdtemp's for dir=""), whoever calls
    env["COLLECTOR_STATE_DIR"] = state or tempfile.mkdtemp(dir=STATE["dir"] or None)
    env.pop("DEBUGINFOD_URLS", None)  # never let gdb/eu-stack go to the network
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def collector_command() -> tuple[list[str], str]:
    """The installed `collector` command if it runs this checkout's code (an
    editable install), else this checkout's bin/collector, the same script,
    run by this interpreter."""
    script = shutil.which("collector")
    if script:
        try:
            with open(script) as f:
                first = f.readline()
            interp = first[2:].strip().split()[0] if first.startswith("#!") else sys.executable
            where = subprocess.run(
                [interp, "-c", "import collector, os; print(os.path.dirname(os.path.realpath(collector.__file__)))"],
                capture_output=True, text=True, cwd="/", timeout=60,
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).stdout.strip()
        except (OSError, IndexError, subprocess.SubprocessError):
            where = ""
        if where and Path(where) == (REPO / "collector").resolve():
            return [script], f"{script} (installed)"
        note = f" (the installed {script} runs {where or 'other code'}, not this checkout)"
    else:
        note = ""
    launcher = REPO / "bin" / "collector"
    return [sys.executable, str(launcher)], f"{sys.executable} {launcher}{note}"


def compile_target(outdir: Path) -> Path:
    if shutil.which("gcc") is None:
        sys.exit("bench: gcc is not installed (apt-get install gcc)")
    exe = outdir / "attach_target"
    subprocess.run(["gcc", "-O2", "-pthread", str(HERE / "attach_target.c"),
                    "-o", str(exe)], check=True)
    return exe


class Target:
    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True)
        self.pid = self.proc.pid
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.kill()
            sys.exit(f"bench: target {argv} did not get ready (said {line!r})")
        time.sleep(0.2)  # let every thread reach pause()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Spinner:
    """The target's spinner, seen through the shared file."""

    def __init__(self, path: Path):
        self.f = open(path, "r+b")
        self.m = mmap.mmap(self.f.fileno(), SHM.size)

    def _get(self):
        return SHM.unpack_from(self.m, 0)

    def reset(self, timeout: float = 5.0):
        reset, *_ = self._get()
        struct.pack_into("<Q", self.m, 0, reset + 1)
        deadline = time.monotonic() + timeout
        while self._get()[1] != reset + 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the spinner did not acknowledge a reset: is the target stopped?")
            time.sleep(0.0005)

    def held_ms(self, timeout: float = 5.0) -> tuple[float | None, float | None]:
        """(longest stall across a stop, longest other stall) since the reset,
        once the spinner has run again after the tool; (None, None) if it
        never ran again (the tool left it stopped)."""
        loops = self._get()[3]
        deadline = time.monotonic() + timeout
        while self._get()[3] < loops + 2000:
            if time.monotonic() > deadline:
                return None, None
            time.sleep(0.001)
        _, _, held, _, other = self._get()
        return held / 1e6, other / 1e6


def count_frames(tool: str, out: str) -> int:
    if tool.startswith("collector") and "--version" not in tool:
        try:
            return sum(len(t["frames"]) for t in json.loads(out)["threads"])
        except (ValueError, KeyError, TypeError):
            return 0
    return sum(1 for line in out.splitlines() if line.startswith("#"))


FIFO: list[str] = []     # ["chrt", "-f", "10"] with --fifo


def run_tool(argv: list[str], state: str | None = None) -> tuple[float, float, int, str, str]:
    """(wall ms, cpu ms: user + system of the tool and its children, exit
    status, stdout, stderr)."""
    env = tool_env(state)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(FIFO + argv, capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=TOOL_TIMEOUT)
    wall = (time.perf_counter() - t0) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    return wall, cpu, r.returncode, r.stdout, r.stderr


def bench_target(tools: dict[str, list[str]], runs: int, spinner: Spinner | None) -> dict:
    res = {name: {"wall": [], "cpu": [], "held": [], "noise": [], "frames": [], "rc": [],
                  "report": [], "service_cpu": []}
           for name in tools}
    for rnd in range(runs + 1):  # round 0 warms caches up and is not counted
        for name, argv in tools.items():
            if spinner:
                spinner.reset()
            served = CONTROL["pid"] and "via service" in name
            before = service_cpu_ms() if served else 0.0
            wall, cpu, rc, out, err = run_tool(argv, STATE["dir"] if CACHED in name else None)
            service_idle()
            if served:
                res[name]["service_cpu"].append(service_cpu_ms() - before)
            held, noise = spinner.held_ms() if spinner else (None, None)
            if spinner and held is None:
                print(f"  ! {name} left the target stopped", file=sys.stderr)
            if rnd == 0:
                if rc not in (0, 1) or (name.startswith("collector") and rc != 0):
                    print(f"  ! {name} exited {rc}: {err.strip()[:300]}", file=sys.stderr)
                continue
            r = res[name]
            r["wall"].append(wall)
            r["cpu"].append(cpu)
            r["held"].append(held)
            r["noise"].append(noise)
            r["rc"].append(rc)
            r["frames"].append(count_frames(name, out))
            if name.startswith("collector") and rc == 0 and out.startswith("{"):
                try:
                    r["report"].append(json.loads(out)["timings"])
                except (ValueError, KeyError):
                    pass
    return res


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, unit="", digits=1):
    return "-" if x is None else f"{x:.{digits}f}{unit}"


def ratio(a, b):
    return None if a is None or not b else a / b


def print_table(title: str, res: dict, held: bool):
    print(f"\n{title}")
    eu = res.get("eu-stack")
    eu_wall = med(eu["wall"]) if eu else None
    eu_held = med(eu["held"]) if eu else None
    cols = ["tool", "wall ms", "wall/eu-stack"]
    if held:
        cols[2:2] = ["held ms"]
        cols.append("held/eu-stack")
        cols.append("noise ms")
    cols += ["cpu ms", "frames", "exit"]
    rows = []
    for name, r in res.items():
        w, h = med(r["wall"]), med(r["held"])
        row = [name, fmt(w), fmt(ratio(w, eu_wall), "x")]
        if held:
            row[2:2] = [fmt(h, digits=3)]  # holds are tens of microseconds
            row.append(fmt(ratio(h, eu_held), "x", digits=2))
            row.append(fmt(med(r["noise"]), digits=3))
        row += [fmt(med(r["cpu"])), str(max(r["frames"], default=0)),
                ",".join(sorted(set(map(str, r["rc"]))))]
        rows.append(row)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cols)))
    for row in rows:
        print("  ".join(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(row)))
    reps = res.get("collector", {}).get("report") or []
    if reps:
        keys = [k for k in reps[0] if all(isinstance(t.get(k), (int, float)) for t in reps)]
        parts = [f"{k} {statistics.median(t[k] for t in reps):.1f} ms" for k in keys]
        print(f"  collector's own timings (median): {', '.join(parts)}")
    for name, r in res.items():
        if r["service_cpu"]:
            print(f"  {name}: the service's CPU per request {statistics.mean(r['service_cpu']):.1f} ms "
                  "(mean, its children's included; the next tool starts once they are done)")


def verdict(label: str, value, target: float):
    if value is None:
        print(f"  {label}: not measured")
    elif value <= target:
        print(f"  {label}: met ({value:.2f}x <= {target}x)")
    else:
        print(f"  {label}: MISSED ({value:.2f}x > {target}x, {value / target:.1f} times over)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="measured runs per tool (median; default 5)")
    ap.add_argument("--threads", type=int, default=50)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--recursion", type=int, default=10000)
    ap.add_argument("--no-gdb", action="store_true", help="leave gdb out (it is the slow one)")
    ap.add_argument("--pin", action="store_true",
                    help="pin the spinner to the last cpu and the tools to the others")
    ap.add_argument("--fifo", action="store_true",
                    help="run every tool SCHED_FIFO (chrt -f 10; root): for a loaded machine")
    ap.add_argument("--json", metavar="PATH", help="also write the raw measurements here")
    ap.add_argument("--service", action="store_true",
                    help="also attach through a resident `collector serve --control` (warm)")
    ap.add_argument("--only", type=lambda s: set(s.split(",")), default=set(CASES),
                    metavar="CASES", help=f"the targets to run, of {','.join(CASES)} (default all)")
    args = ap.parse_args(argv)
    if not args.only <= set(CASES):
        ap.error(f"--only: no such target {', '.join(sorted(args.only - set(CASES)))}")
    if args.fifo:
        if os.geteuid() != 0 or shutil.which("chrt") is None:
            sys.exit("bench: --fifo needs root and chrt (util-linux)")
        FIFO[:] = ["chrt", "-f", "10"]
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "collector"),
                    str(REPO / "unwinder")], check=False, stdout=subprocess.DEVNULL)

    col, col_label = collector_command()
    have = {name: shutil.which(name) is not None for name in ("eu-stack", "gdb")}
    print(f"collector: {col_label}")
    print(f"eu-stack: {shutil.which('eu-stack') or 'not installed'}; "
          f"gdb: {shutil.which('gdb') or 'not installed'}; cpus: {os.cpu_count()}")
    load = os.getloadavg()[0]
    print(f"load average {load:.1f}{'; tools run SCHED_FIFO' if FIFO else ''}")
    if load > (os.cpu_count() or 1) * 0.75:
        print(f"warning: load average {load:.1f} on {os.cpu_count()} cpus: other work is running, "
              f"the numbers will be noisy")
    started = time.monotonic()
    results = {}
    with tempfile.TemporaryDirectory(prefix="collector-bench-") as tmp:
        tmp = Path(tmp)
        STATE["dir"] = str(tmp)
        exe = compile_target(tmp)
        service = start_service(tmp, args.pin) if args.service else None
        try:
            run_targets(args, col, have, exe, tmp, results)
        finally:
            if service is not None:
                service.terminate()
                service.wait()

    print(f"\nbench took {time.monotonic() - started:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def service_idle(most: float = 10.0) -> None:
    """Wait until the service's children are done: a delivering child (or
    the resident worker) goes on after it has answered (the store's close),
    and on the tools' cpu that work is not the next tool's. Done: no child
    came, went or ran for 3 ms. The service's CPU in all (service_cpu_ms)
    is printed apart."""
    if not CONTROL["pid"]:
        return
    deadline = time.monotonic() + most
    last = None
    while time.monotonic() < deadline:
        now = children_runtime(CONTROL["pid"])
        if now == last:
            return
        last = now
        time.sleep(0.003)


def children_runtime(pid: int) -> list[tuple[str, str]]:
    """(pid, ns on a cpu so far) of each child of `pid`."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
    except OSError:
        return []
    out = []
    for kid in kids:
        try:
            with open(f"/proc/{kid}/schedstat") as f:
                out.append((kid, f.read().split()[0]))
        except (OSError, IndexError):
            out.append((kid, ""))
    return out


def service_cpu_ms() -> float:
    """The service's CPU so far: its own, its reaped children's and its
    live ones' (the resident worker is never reaped)."""
    pid = CONTROL["pid"]
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    reaped = sum(int(x) for x in fields[13:15]) * 1000 / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/schedstat") as f:
        own = int(f.read().split()[0]) / 1e6
    return own + reaped + sum(int(ns) for _, ns in children_runtime(pid) if ns) / 1e6


def start_service(tmp: Path, pin: bool) -> subprocess.Popen:
    CONTROL["path"] = str(tmp / "control.sock")
    proc = start_serve(["--control", CONTROL["path"]], tool_env(), tmp / "serve.log")
    cpus = sorted(os.sched_getaffinity(0))
    if pin and len(cpus) >= 2:
        os.sched_setaffinity(proc.pid, cpus[:-1])  # the tools' cpus, not the spinner's
    CONTROL["pid"] = proc.pid
    print(f"service: pid {proc.pid}, control socket {CONTROL['path']}")
    return proc


def run_targets(args, col: list[str], have: dict, exe: Path, tmp: Path, results: dict) -> None:
    cold = [*col, "attach", "--no-service"]
    warm = [*col, "attach"]
    if "threads" in args.only:
        bench_threads(args, col, cold, warm, have, exe, tmp, results)
    if "deep" in args.only:
        bench_deep(args, cold, have, exe, results)
    if "node" in args.only and shutil.which("node"):
        bench_node(args, cold, warm, have, results)


def bench_threads(args, col: list[str], cold: list[str], warm: list[str], have: dict, exe: Path,
                  tmp: Path, results: dict) -> None:
    # 1. many threads + spinner. --pin gives the spinner a cpu of its own
    # and the bench (hence every tool) the others.
    cpus = sorted(os.sched_getaffinity(0))
    spin_cpu = -1
    if args.pin and len(cpus) >= 2:
        spin_cpu = cpus[-1]
        os.sched_setaffinity(0, cpus[:-1])
        print(f"spinner pinned to cpu {spin_cpu}; tools run on cpu(s) {cpus[:-1]}")
    shm = tmp / "spinner.shm"
    shm.write_bytes(b"\0" * SHM.size)
    target = Target([str(exe), "threads", str(shm), str(args.threads), str(args.depth),
                     str(spin_cpu)])
    try:
        spinner = Spinner(shm)
        pid = str(target.pid)
        # like for like: symbol names only, then with file:line and inlines
        tools = {"collector": [*cold, "--symbolize-budget", "0", pid]}
        if have["eu-stack"]:
            tools["eu-stack"] = ["eu-stack", "-p", pid]
        tools["collector (lines)"] = [*cold, pid]
        tools[f"collector (lines, {CACHED})"] = [*cold, pid]
        if args.service:
            tools["collector via service (lines)"] = [*warm, pid]
            tools["collector via service, budget 0"] = [*warm, "--symbolize-budget", "0", pid]
        if have["eu-stack"]:
            tools["eu-stack -s -i"] = ["eu-stack", "-s", "-i", "-p", pid]
        if have["gdb"] and not args.no_gdb:
            tools["gdb"] = ["gdb", "-nx", "-batch", "-p", pid, "-ex", "thread apply all bt"]
        tools["baseline: python -c pass"] = [sys.executable, "-c", "pass"]
        tools["collector --version"] = [*col, "--version"]
        res = bench_target(tools, args.runs, spinner)
        results["threads"] = res
        print_table(f"{args.threads} threads parked {args.depth} deep + 1 spinner "
                    f"(pid {pid}), median of {args.runs}", res, held=True)
        print("  held: the spinner's longest stall across a stop (a voluntary context switch: "
              "it never blocks by itself);\n  noise: its longest other stall (preemption, "
              "stolen vcpu) in the same run, not counted as held.\n  baseline rows: "
              "no attach at all, and the collector's start-up alone.")
        c, e = res["collector"], res.get("eu-stack")
        if e:
            verdict("held <= 0.5x eu-stack", ratio(med(c["held"]), med(e["held"])), 0.5)
            verdict("wall <= 1.5x eu-stack", ratio(med(c["wall"]), med(e["wall"])), 1.5)
            verdict("issue 13: held <= 1.2x eu-stack",
                    ratio(med(c["held"]), med(e["held"])), 1.2)
            verdict("issue 13: wall <= 2.5x eu-stack",
                    ratio(med(c["wall"]), med(e["wall"])), 2.5)
            cl, es = res["collector (lines)"], res.get("eu-stack -s -i")
            if es:
                verdict("with lines: wall <= 1.5x eu-stack -s -i",
                        ratio(med(cl["wall"]), med(es["wall"])), 1.5)
            if args.service:
                verdict("issue 13: through the service, default: wall <= 1.0x eu-stack",
                        ratio(med(res["collector via service (lines)"]["wall"]),
                              med(e["wall"])), 1.0)
    finally:
        target.kill()
        os.sched_setaffinity(0, cpus)


def bench_deep(args, cold: list[str], have: dict, exe: Path, results: dict) -> None:
    target = Target([str(exe), "recurse", str(args.recursion)])
    try:
        pid = str(target.pid)
        limit = str(args.recursion + 100)
        tools = {"collector": [*cold, "--symbolize-budget", "0", pid, "--max-frames", limit]}
        if have["eu-stack"]:
            tools["eu-stack"] = ["eu-stack", "-n", "0", "-p", pid]
        if have["gdb"] and not args.no_gdb:
            tools["gdb"] = ["gdb", "-nx", "-batch", "-p", pid, "-ex", "bt"]
        res = bench_target(tools, args.runs, None)
        results["recursion"] = res
        print_table(f"main thread {args.recursion} frames deep (pid {pid}), median of {args.runs}",
                    res, held=False)
        c, e = res["collector"], res.get("eu-stack")
        if e:
            verdict("wall <= 1x eu-stack", ratio(med(c["wall"]), med(e["wall"])), 1.0)
            verdict("issue 13: wall <= 4x eu-stack", ratio(med(c["wall"]), med(e["wall"])), 4.0)
    finally:
        target.kill()


def bench_node(args, cold: list[str], warm: list[str], have: dict, results: dict) -> None:
    target = Target(["node", "-e", "console.log('ready'); setInterval(() => {}, 1000)"])
    try:
        pid = str(target.pid)
        tools = {"collector (lines)": [*cold, pid]}
        if have["eu-stack"]:
            tools["eu-stack"] = ["eu-stack", "-p", pid]
        if args.service:
            tools["collector via service (lines)"] = [*warm, pid]
        res = bench_target(tools, args.runs, None)
        results["node"] = res
        print_table(f"node, idle (pid {pid}), median of {args.runs}", res, held=False)
        e = res.get("eu-stack")
        if e and args.service:
            verdict("issue 13: node through the service, default: wall <= 1.0x eu-stack",
                    ratio(med(res["collector via service (lines)"]["wall"]), med(e["wall"])), 1.0)
    finally:
        target.kill()


if __name__ == "__main__":
    sys.exit(main())
