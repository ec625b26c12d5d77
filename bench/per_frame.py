#!/usr/bin/env python3
"""The engine's cost per frame: one capture of each of bench/attach.py's
targets, unwound again and again in this one process.

    python bench/per_frame.py [--runs 20] [--threads 50] [--depth 20] [--recursion 10000]

Each target (the main thread 10,000 frames deep; 50 threads parked 20 deep
plus a spinner, pinned to a cpu of its own as `bench/attach.py --pin` pins
it) is captured once, as `collector attach` captures it, and released (the
deep stack's frames beyond the copied window are read from the running
target, as attach reads them). Then every run unwinds every thread of that one snapshot with the
same image cache (its CFI rows warm after the first run, as in a deep walk
that repeats its few frames), and prints the median and the best over the
runs (cpu time of this thread: a shared machine's preemptions do not count,
its contention for the cpu's caches still does) of:

- walk: `unwinder.walk.unwind` alone, microseconds per frame walked (the
  frames a deep walk leaves out included: it walked them);
- threads: `collector.collect.unwind_threads`, the whole of what
  timings.unwind_ms measures (modules, walks, report dicts), per frame.

Issue 13's target: walk <= 2 us per frame.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from attach import Target, compile_target  # noqa: E402  (the same targets)

from collector.collect import unwind_threads  # noqa: E402
from collector.targets import live  # noqa: E402
from unwinder.modules import ImageCache, ModuleMap  # noqa: E402
from unwinder.walk import unwind  # noqa: E402


def walked(trace) -> int:
    return len(trace.frames) + (trace.elided.count if trace.elided else 0)


def measure(pid: int, runs: int) -> dict:
    cap = live.capture(pid)
    space, cache = cap.snapshot, ImageCache()
    regs = [space.registers(info.tid) for info in cap.threads]
    walk_us, all_us, frames = [], [], 0
    gc.disable()    # as unwind_threads does
    try:
        for _ in range(runs + 1):           # the first run warms the cache: not counted
            modules = ModuleMap(space, cache)
            t0 = time.thread_time()
            frames = sum(walked(unwind(space, modules, r, None)) for r in regs)
            walk_us.append((time.thread_time() - t0) * 1e6 / frames)
            t0 = time.thread_time()
            unwind_threads(space, cap.threads, None, cache, (None, ""))
            all_us.append((time.thread_time() - t0) * 1e6 / frames)
    finally:
        gc.enable()
    space.close()
    return {"threads": len(regs), "frames": frames,
            "walk": (statistics.median(walk_us[1:]), min(walk_us[1:])),
            "all": (statistics.median(all_us[1:]), min(all_us[1:]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="runs per target (median; default 20)")
    ap.add_argument("--threads", type=int, default=50)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--recursion", type=int, default=10000)
    args = ap.parse_args(argv)
    print(f"python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.1f}")
    cpus = sorted(os.sched_getaffinity(0))
    spin_cpu = -1
    if len(cpus) >= 2:  # as bench/attach.py --pin: the spinner on a cpu of its own
        spin_cpu = cpus[-1]
        os.sched_setaffinity(0, cpus[:-1])
    rows = []
    with tempfile.TemporaryDirectory(prefix="collector-bench-") as tmp:
        exe = compile_target(Path(tmp))
        shm = Path(tmp) / "spinner.shm"
        shm.write_bytes(b"\0" * 40)
        for label, argv in ((f"1 thread {args.recursion} deep", [str(exe), "recurse", str(args.recursion)]),
                            (f"{args.threads} threads x {args.depth} deep",
                             [str(exe), "threads", str(shm), str(args.threads), str(args.depth),
                              str(spin_cpu)])):
            target = Target(argv)
            try:
                rows.append((label, measure(target.pid, args.runs)))
            finally:
                target.kill()
    print(f"{args.runs} runs, one snapshot per target, us per frame walked: median (best)")
    print(f"{'target':<26} {'threads':>7} {'frames':>7} {'walk us':>13} {'threads us':>13}")
    for label, r in rows:
        walk, whole = (f"{m:.2f} ({b:.2f})" for m, b in (r["walk"], r["all"]))
        print(f"{label:<26} {r['threads']:>7} {r['frames']:>7} {walk:>13} {whole:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
