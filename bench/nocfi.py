#!/usr/bin/env python3
"""True and false frames without unwind tables: gdb, eu-stack and the
collector on tests/fixtures/stale.c built by gcc and clang, -O0 and -O2, as
C and as C++, all with -fno-asynchronous-unwind-tables -fno-unwind-tables.

    python bench/nocfi.py

Every thread of the fixture first calls usleep, then parks in a known chain
over the stack memory usleep's frames left behind (see stale.c). All three
tools look at the same parked process (gdb -p with `thread apply all bt`,
eu-stack -p, collector attach). A thread's frames are matched in order
against its chain, from frame 0 (the pause wrapper) to its root (main, or
sleeper): a frame that is the next function of the chain is true, any other
frame before the root is false, a function of the chain never shown is
lost. A cell is "true/false/lost", summed over the 3 threads (16 frames).
The e2e test tests/e2e/test_nocfi.py uses the same functions.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from bench.fallbacks import FIXTURES, TOOL_TIMEOUT, collector, report_of  # noqa: E402

NO_TABLES = ("-fno-asynchronous-unwind-tables", "-fno-unwind-tables")
COMPILERS = {"gcc": ("gcc", "c"), "clang": ("clang", "c"), "g++": ("g++", "c++"),
             "clang++": ("clang++", "c++")}
VARIANTS = [(cc, opt) for cc in COMPILERS for opt in ("-O0", "-O2")]
MAIN_CHAIN = ["pause", "park", "linger", "main"]
SLEEPER_CHAIN = ["pause", "park", "c", "b", "a", "sleeper"]


def available(cc: str) -> bool:
    return shutil.which(COMPILERS[cc][0]) is not None


def build(cc: str, opt: str, outdir: str) -> str:
    compiler, lang = COMPILERS[cc]
    out = os.path.join(outdir, f"stale-{cc}{opt}")
    # C++ keeps unwind tables for exceptions unless told there are none
    no_eh = ("-fno-exceptions",) if lang == "c++" else ()
    subprocess.run([compiler, "-x", lang, "-pthread", "-g0", opt, *NO_TABLES, *no_eh,
                    "-I", FIXTURES,
                    os.path.join(FIXTURES, "stale.c"), "-o", out], check=True,
                   capture_output=True)
    return out


def base(name: str | None) -> str | None:
    """`a(int)` -> `a`, `pause@@GLIBC_2.2.5` -> `pause`, `__libc_pause` -> `pause`."""
    if not name:
        return None
    name = name.split("@")[0].split("(")[0]
    return "pause" if name.endswith("pause") else name


def score(names: list[str | None], chain: list[str]) -> tuple[int, int, int]:
    """(true, false, lost) of one thread's frames against its chain."""
    true = false = 0
    for name in map(base, names):
        if true < len(chain) and name == chain[true]:
            true += 1
            if true == len(chain):
                break
        else:
            false += 1
    return true, false, len(chain) - true


def chains(threads: dict[int, list], pid: int) -> list[tuple[list, list[str]]]:
    return [(names, MAIN_CHAIN if tid == pid else SLEEPER_CHAIN)
            for tid, names in sorted(threads.items())]


def total(threads: dict[int, list], pid: int) -> tuple[int, int, int]:
    scores = [score(names, chain) for names, chain in chains(threads, pid)]
    return tuple(sum(s[i] for s in scores) for i in range(3))


# --------------------------------------------------------------- the tools

_GDB_THREAD = re.compile(r"^Thread \d+ \(.*LWP (\d+)")
_GDB_FRAME = re.compile(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\S+)")
_EU_FRAME = re.compile(r"^#\d+\s+0x[0-9a-f]+(?:\s+(\S+))?")


def gdb_threads(pid: int) -> dict[int, list]:
    r = subprocess.run(["gdb", "-nx", "-batch", "-p", str(pid), "-ex", "set pagination off",
                        "-ex", "thread apply all bt 64"], capture_output=True, text=True,
                       timeout=TOOL_TIMEOUT, stdin=subprocess.DEVNULL)
    out: dict[int, list] = {}
    tid = None
    for line in r.stdout.splitlines():
        m = _GDB_THREAD.match(line)
        if m:
            tid = int(m.group(1))
            out[tid] = []
        elif tid is not None and (m := _GDB_FRAME.match(line)):
            out[tid].append(None if m.group(1) == "??" else m.group(1))
    return out


def eu_stack_threads(pid: int) -> dict[int, list]:
    r = subprocess.run(["eu-stack", "-n", "64", "-p", str(pid)], capture_output=True,
                       text=True, timeout=TOOL_TIMEOUT)
    out: dict[int, list] = {}
    tid = None
    for line in r.stdout.splitlines():
        if line.startswith("TID "):
            tid = int(line.split()[1].rstrip(":"))
            out[tid] = []
        elif tid is not None and (m := _EU_FRAME.match(line)):
            out[tid].append(m.group(1))
    return out


def collector_threads(pid: int) -> tuple[dict[int, list], dict]:
    report = report_of(collector("attach", pid))
    threads = {t["tid"]: [f["function"] for f in t["frames"] if not f.get("inlined")]
               for t in report["threads"]}
    return threads, report


def spawn(exe: str) -> subprocess.Popen:
    proc = subprocess.Popen([exe], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if proc.stdout.readline().strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"{exe} did not get ready")
    time.sleep(0.05)
    return proc


def measure(exe: str) -> dict[str, tuple | None]:
    """tool -> (true, false, lost), or None when the tool is not installed."""
    proc = spawn(exe)
    try:
        got = {"gdb": total(gdb_threads(proc.pid), proc.pid) if shutil.which("gdb") else None,
               "eu-stack": total(eu_stack_threads(proc.pid), proc.pid)
               if shutil.which("eu-stack") else None}
        got["collector"] = total(collector_threads(proc.pid)[0], proc.pid)
    finally:
        proc.kill()
        proc.wait()
    return got


def table() -> str:
    rows = ["| build | gdb | eu-stack | collector |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as d:
        for cc, opt in VARIANTS:
            if not available(cc):
                rows.append(f"| {cc} {opt} | not installed | | |")
                continue
            got = measure(build(cc, opt, d))
            cells = ["/".join(map(str, got[k])) if got[k] else "n/a"
                     for k in ("gdb", "eu-stack", "collector")]
            rows.append(f"| {cc} {opt} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
