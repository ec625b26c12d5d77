"""Symbolization speed: a 50-thread x depth-20 process built with -O2 -g,
`eu-stack -s` (unwind + names + file:line) and `eu-stack -s -i` (and
inlined frames) against the collector.

    .venv/bin/python bench/symbolize.py [--threads 50] [--depth 20] [--runs 7]
    .venv/bin/python bench/symbolize.py --rust [--runs 7]

--rust: tests/fixtures/park.rs instead (rustc -C opt-level=3 -g: 5 std
threads, their std's large debug info; --threads and --depth do not apply).

Prints medians (ms) of `eu-stack -s`, `eu-stack -s -i` and of symbolizing the same process's
report two ways, each in a fresh interpreter: `symbolize_ms` as the report's
timings.symbolize_ms says (all symbolization work, the DWARF reader's import
included: what `collector attach` adds), and `symbolize_cold_ms` with the
collector's own imports and reading the JSON report too (what
`collector symbolize` costs, less interpreter start-up); `*_cached_ms`: the
same with a state directory ($STATE_DIRECTORY) whose disk cache an earlier
run filled (symcache). The whole
`collector attach --no-service` (start-up, stop, unwind, symbolize) is
printed beside. The checkout's modules are compiled to bytecode first, as
an installed collector's are.
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

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
ENV.pop("DEBUGINFOD_URLS", None)
ENV.pop("STATE_DIRECTORY", None)
SYMBOLIZE = """
import json, sys, time
t = time.perf_counter()
from collector.symbolize import symbolize
report = symbolize(json.load(open(sys.argv[1])), 60.0)
print((time.perf_counter() - t) * 1000, report["timings"]["symbolize_ms"],
      sum(len(t["frames"]) for t in report["threads"]))
"""


def wall_ms(argv, env=ENV) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env).stdout
    return (time.perf_counter() - t) * 1000, out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=50)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--rust", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        exe = Path(d) / "target"
        if args.rust:
            build = ["rustc", "-C", "opt-level=3", "-g", str(REPO / "tests" / "fixtures" / "park.rs")]
            argv = [str(exe)]
        else:
            build = ["gcc", "-O2", "-g", "-pthread", str(REPO / "bench" / "symbolize_target.c")]
            argv = [str(exe), str(args.threads), str(args.depth)]
        subprocess.run(build + ["-o", str(exe)], check=True)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "collector"),
                        str(REPO / "unwinder")], check=True, stdout=subprocess.DEVNULL)
        target = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            assert target.stdout.readline().strip() == "ready"
            time.sleep(0.2)
            pid = str(target.pid)
            bare = Path(d) / "report.json"
            bare.write_text(wall_ms([sys.executable, "-m", "collector", "attach", "--no-service",
                                     "--symbolize-budget", "0", pid],
                                    {**ENV, "COLLECTOR_STATE_DIR": tempfile.mkdtemp(dir=d)})[1])
            state = str(Path(d) / "state")  # the cached rows' state directory, attach's too
            cached_env = {**ENV, "STATE_DIRECTORY": state, "COLLECTOR_STATE_DIR": state}
            symbolize = [sys.executable, "-c", SYMBOLIZE, str(bare)]
            attach_argv = [sys.executable, str(REPO / "bin" / "collector"), "attach", "--no-service", pid]
            wall_ms(symbolize, cached_env)  # fills the disk cache
            eu, eu_inline, attach, runs, attach_cached, runs_cached = [], [], [], [], [], []
            for _ in range(args.runs):  # interleaved: a shared machine's load hits all alike
                eu.append(wall_ms(["eu-stack", "-s", "-p", pid])[0])
                eu_inline.append(wall_ms(["eu-stack", "-s", "-i", "-p", pid])[0])
                runs.append(wall_ms(symbolize)[1].split())
                runs_cached.append(wall_ms(symbolize, cached_env)[1].split())
                # a fresh state directory: no store, nor disk cache, of an earlier run
                attach.append(wall_ms(attach_argv, {**ENV, "COLLECTOR_STATE_DIR":
                                                    tempfile.mkdtemp(dir=d)})[0])
                attach_cached.append(wall_ms(attach_argv, cached_env)[0])
        finally:
            target.kill()
            target.wait()
    med = statistics.median
    cold_ms, sym_ms = med(float(r[0]) for r in runs), med(float(r[1]) for r in runs)
    cold_cached_ms = med(float(r[0]) for r in runs_cached)
    sym_cached_ms = med(float(r[1]) for r in runs_cached)
    eu_ms, eu_i_ms, attach_ms, attach_cached_ms = map(med, (eu, eu_inline, attach, attach_cached))
    shape = {"program": "rust"} if args.rust else {"threads": args.threads, "depth": args.depth}
    print(json.dumps({**shape, "frames": int(runs[0][2]),
                      "eu_stack_s_ms": round(eu_ms, 1), "eu_stack_s_i_ms": round(eu_i_ms, 1),
                      "symbolize_ms": round(sym_ms, 1),
                      "symbolize_cold_ms": round(cold_ms, 1),
                      "symbolize_cached_ms": round(sym_cached_ms, 1),
                      "symbolize_cold_cached_ms": round(cold_cached_ms, 1),
                      "collector_attach_ms": round(attach_ms, 1),
                      "collector_attach_cached_ms": round(attach_cached_ms, 1),
                      "load_average": round(os.getloadavg()[0], 2)}))
    print(f"symbolize / eu-stack -s -i = {sym_ms / eu_i_ms:.2f} ({sym_cached_ms / eu_i_ms:.2f} "
          f"cached); cold {cold_ms / eu_i_ms:.2f} ({cold_cached_ms / eu_i_ms:.2f}); whole "
          f"collector attach / eu-stack -s -i = {attach_ms / eu_i_ms:.2f} "
          f"({attach_cached_ms / eu_i_ms:.2f})")


if __name__ == "__main__":
    main()
