#!/usr/bin/env python3
"""What Python frames cost an attach: `collector attach` on Python targets
with the reading on (default) and off (COLLECTOR_PYTHON_FRAMES=0).

    python bench/python_frames.py [--runs 7] [--symbolize no|yes|both] [--python EXE ...]

Targets, for each interpreter: tests/fixtures/pynested.py (2 threads, 4 and
6 Python frames) and `deep` (16 threads, each 50 Python frames deep in
time.sleep). Rows: median wall time of the command, with --symbolize-budget
0 (names only) and with the default symbolization; the median unwind_ms the
report itself gives; the overhead of on over off. Round-robin, one warm-up
round not counted. The issue's target: at most +20% wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEEP = """
import threading, time
def down(n):
    if n:
        return down(n - 1)
    time.sleep(1000)
for _ in range(15):
    threading.Thread(target=down, args=(50,), daemon=True).start()
print("ready", flush=True)
down(50)
"""


def start(python: str, script: str) -> subprocess.Popen:
    proc = subprocess.Popen([python, script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    return proc


def attach(pid: int, on: bool, symbolize: bool) -> tuple[float, float, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLLECTOR_PYTHON_FRAMES="1" if on else "0")
    argv = [sys.executable, "-m", "collector", "attach", str(pid)]
    if not symbolize:
        argv += ["--symbolize-budget", "0"]
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout
    wall = (time.monotonic() - t0) * 1000
    report = json.loads(out)
    py = sum(t.get("methods", {}).get("interpreter", 0) for t in report["threads"])
    return wall, report["timings"]["unwind_ms"], py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--symbolize", choices=("no", "yes", "both"), default="both")
    ap.add_argument("--python", nargs="+", default=[
        str(Path.home() / ".pyenv/versions/3.12.1/bin/python3.12"), "/usr/bin/python3"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        deep = Path(d) / "deep.py"
        deep.write_text(DEEP)
        print("| target | symbolize | python frames | wall ms off | wall ms on | overhead "
              "| unwind_ms off | unwind_ms on |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for python in args.python:
            if not os.path.exists(python):
                continue
            for name, script in (("pynested", REPO / "tests/fixtures/pynested.py"),
                                 ("deep", deep)):
                proc = start(python, str(script))
                try:
                    for symbolize in {"no": (False,), "yes": (True,),
                                      "both": (False, True)}[args.symbolize]:
                        rows = {True: [], False: []}
                        for run in range(args.runs + 1):
                            for on in (False, True):
                                got = attach(proc.pid, on, symbolize)
                                if run:
                                    rows[on].append(got)
                        med = {on: [statistics.median(r[i] for r in rows[on]) for i in range(2)]
                               for on in rows}
                        frames = rows[True][0][2]
                        print(f"| {os.path.basename(python)} {name} "
                              f"| {'yes' if symbolize else 'no'} "
                              f"| {frames} | {med[False][0]:.1f} | {med[True][0]:.1f} "
                              f"| {100 * (med[True][0] / med[False][0] - 1):+.1f}% "
                              f"| {med[False][1]:.1f} | {med[True][1]:.1f} |", flush=True)
                finally:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    main()
