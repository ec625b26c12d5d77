#!/usr/bin/env python3
"""How long after its exec `collector attach` stops the first thread (and
releases it), seen by strace: the first PTRACE_GETREGS (the thread is
stopped) and the first PTRACE_DETACH after the execve. eu-stack alike.

    python bench/first_stop.py [--runs 9] [--tree DIR ...] [--fifo]

--tree runs the collector (bin/collector) of each checkout given (default this
one), round-robin, so that before/after are measured under the same load.
--fifo runs every tool SCHED_FIFO (chrt -f 10, root only) so that other
work on a loaded machine does not delay it. strace traces only execve and
ptrace (--seccomp-bpf), so the rest of the run goes at full speed.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from attach import Target, compile_target, tool_env  # noqa: E402

LINE = re.compile(r"^\d+ +(\d+\.\d+) (execve|ptrace)\(([^,)]*)")


def timeline(trace: str) -> dict[str, float]:
    """ms from the first execve to the first GETREGS and DETACH."""
    out: dict[str, float] = {}
    t0 = None
    for line in trace.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        t, call, what = float(m.group(1)), m.group(2), m.group(3)
        if call == "execve" and t0 is None:
            t0 = t
        elif t0 is not None and call == "ptrace":
            key = {"PTRACE_GETREGS": "stopped", "PTRACE_DETACH": "released"}.get(what)
            if key and key not in out:
                out[key] = (t - t0) * 1000
    return out


def run(argv: list[str], env: dict, fifo: bool, tmp: Path, cwd: str) -> dict[str, float]:
    log = tmp / "strace.log"
    cmd = ["strace", "-f", "--seccomp-bpf", "-ttt", "-e", "trace=execve,ptrace",
           "-o", str(log), *argv]
    if fifo:
        cmd = ["chrt", "-f", "10", *cmd]
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL, timeout=120, cwd=cwd)
    return timeline(log.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--tree", action="append", help="a checkout to run the collector from")
    ap.add_argument("--threads", type=int, default=50)
    ap.add_argument("--fifo", action="store_true")
    args = ap.parse_args(argv)
    if shutil.which("strace") is None:
        sys.exit("bench: strace is not installed")
    trees = [Path(t).resolve() for t in (args.tree or [HERE.parent])]
    with tempfile.TemporaryDirectory(prefix="collector-bench-") as tmp:
        tmp = Path(tmp)
        exe = compile_target(tmp)
        shm = tmp / "spinner.shm"
        shm.write_bytes(b"\0" * 40)
        target = Target([str(exe), "threads", str(shm), str(args.threads), "20", "-1"])
        try:
            pid = str(target.pid)
            tools = {}
            for tree in trees:
                env = tool_env(str(tmp))  # the store of every run here, not the machine's
                env["PYTHONPATH"] = str(tree)
                # the tree's installed command (bin/collector); an older tree's `-m`
                # looks in the current directory first
                launcher = tree / "bin" / "collector"
                command = [str(launcher)] if launcher.exists() else ["-m", "collector"]
                tools[f"collector ({tree})"] = (
                    [sys.executable, *command, "attach", pid], env, str(tree))
                subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "collector"),
                                str(tree / "unwinder")], check=False, stdout=subprocess.DEVNULL)
            if shutil.which("eu-stack"):
                tools["eu-stack"] = (["eu-stack", "-p", pid], tool_env(str(tmp)), "/")
            got: dict[str, list[dict]] = {name: [] for name in tools}
            for rnd in range(args.runs + 1):
                for name, (cmd, env, cwd) in tools.items():
                    t = run(cmd, env, args.fifo, tmp, cwd)
                    if rnd:
                        got[name].append(t)
        finally:
            target.kill()
    print(f"first thread stopped / released after exec, ms (median of {args.runs}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus"
          f"{', SCHED_FIFO' if args.fifo else ''})")
    for name, runs in got.items():
        cells = []
        for key in ("stopped", "released"):
            xs = [r[key] for r in runs if key in r]
            cells.append(f"{key} {statistics.median(xs):6.1f}" if xs else f"{key} -")
        print(f"  {name}: {', '.join(cells)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
