#!/usr/bin/env python3
"""Frames to main: gdb, eu-stack and the collector on the fallback fixtures.

    python bench/fallbacks.py

Builds tests/fixtures/crash.c (with CFI, and without any) and jit.c into a
temp dir and prints one table row per fixture. Crashing fixtures: gdb runs
the program and prints `bt` at the fatal signal, then `gcore`s it for
eu-stack (`eu-stack --core`); the collector is `collector run`. Parked
fixtures (JIT code): gdb -p, eu-stack -p and `collector attach` see the same
process. A cell is the number of frames from the crash (or frame 0) up to and
including main, with how many of them have no name ("??": an unmapped pc,
unregistered JIT code, or a garbage frame), or "-" when main was not reached
(then: frames shown).
The e2e tests use the same functions and print the same rows.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
TOOL_TIMEOUT = 60
WITH_CFI = ("-O2",)
NO_CFI = ("-O2", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
          "-fno-omit-frame-pointer")
CRASHES = [("null", WITH_CFI), ("garbage", WITH_CFI), ("heap", WITH_CFI),
           ("smash", WITH_CFI), ("abort", WITH_CFI), ("write", NO_CFI), ("smash", NO_CFI)]
JITS = ["none", "perf", "gdb", "libunwind"]


def build(source: str, outdir: str, flags=(), libs=()) -> str:
    out = os.path.join(outdir, f"{os.path.splitext(source)[0]}-{abs(hash((flags, libs))):x}")
    if not os.path.exists(out):
        subprocess.run(["gcc", "-pthread", "-g0", *flags, "-I", FIXTURES,
                        os.path.join(FIXTURES, source), "-o", out, *libs], check=True)
    return out


def to_main(names: list[str | None]) -> int | None:
    """Frames up to and including main, or None if main is not among them."""
    return names.index("main") + 1 if "main" in names else None


def cell(names: list[str | None]) -> str:
    """"N" frames to main, "N (k ??)" if k of them have no name, "-" if main
    was not reached (with how many frames were shown)."""
    n = to_main(names)
    if not n:
        return f"- ({len(names)})"
    unnamed = names[:n].count(None)
    return f"{n} ({unnamed} ??)" if unnamed else str(n)


# ------------------------------------------------------------------ gdb

_GDB_FRAME = re.compile(r"^#(\d+)\s+(?:0x([0-9a-f]+) in )?(\S+)")


def parse_gdb(text: str) -> list[tuple[int | None, str | None]]:
    frames = []
    for line in text.splitlines():
        m = _GDB_FRAME.match(line)
        if m and int(m.group(1)) == len(frames):
            name = None if m.group(3) == "??" else m.group(3)
            frames.append((int(m.group(2), 16) if m.group(2) else None, name))
    return frames


def gdb_available() -> bool:
    return shutil.which("gdb") is not None


def gdb_crash(argv: list[str], core: str | None = None) -> list:
    """gdb runs the program to its fatal signal and prints `bt` (and gcores it)."""
    cmds = ["-ex", "set pagination off", "-ex", "set startup-with-shell off", "-ex", "run",
            "-ex", "bt 64"]
    if core:
        cmds += ["-ex", f"gcore {core}"]
    r = subprocess.run(["gdb", "-nx", "-batch", *cmds, "-ex", "kill", "--args", *argv],
                       capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                       stdin=subprocess.DEVNULL)
    return parse_gdb(r.stdout)


def gdb_live(pid: int) -> list:
    r = subprocess.run(["gdb", "-nx", "-batch", "-p", str(pid), "-ex", "set pagination off",
                        "-ex", "bt 64"], capture_output=True, text=True,
                       timeout=TOOL_TIMEOUT, stdin=subprocess.DEVNULL)
    return parse_gdb(r.stdout)


# ------------------------------------------------------------- eu-stack

_EU_FRAME = re.compile(r"^#(\d+)\s+0x([0-9a-f]+)(?:\s+(\S+))?")


def parse_eu_stack(text: str) -> list:
    """The first thread's frames."""
    frames = []
    for line in text.splitlines():
        if line.startswith("TID") and frames:
            break
        m = _EU_FRAME.match(line)
        if m:
            frames.append((int(m.group(2), 16), m.group(3)))
    return frames


def eu_stack_available() -> bool:
    return shutil.which("eu-stack") is not None


def eu_stack_core(core: str, exe: str) -> list:
    r = subprocess.run(["eu-stack", "-n", "64", "-e", exe, "--core", core],
                       capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    return parse_eu_stack(r.stdout)


def eu_stack_live(pid: int) -> list:
    r = subprocess.run(["eu-stack", "-n", "64", "-p", str(pid)], capture_output=True,
                       text=True, timeout=TOOL_TIMEOUT)
    return parse_eu_stack(r.stdout)


# ------------------------------------------------------------ collector

def collector(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "collector", *map(str, args)],
                          capture_output=True, text=True, timeout=TOOL_TIMEOUT, env=env,
                          stdin=subprocess.DEVNULL)


def report_of(result: subprocess.CompletedProcess) -> dict | None:
    """The report: the last stdout line (`run` shares stdout with the program)."""
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None


def crashed_thread(report: dict) -> dict:
    return next(t for t in report["threads"] if t.get("crashed"))


def side_by_side(ours: list[dict], gdb: list, eu: list) -> str:
    """Our frames (name, method) beside gdb's and eu-stack's names."""
    lines = [f"  {'#':<3} {'collector':<40} {'gdb':<28} eu-stack"]
    for i in range(max(len(ours), len(gdb), len(eu))):
        o = ours[i] if i < len(ours) else None
        left = f"{o['function'] or hex(o['pc'])} [{o['method']}]" if o else ""
        g = (gdb[i][1] or "??") if i < len(gdb) else ""
        e = (eu[i][1] or "??") if i < len(eu) else ""
        lines.append(f"  {i:<3} {left:<40} {g:<28} {e}")
    return "\n".join(lines)


def frame_names(thread: dict) -> list[str | None]:
    return [(f["function"] or "").split("@")[0] or None for f in thread["frames"]]


# ---------------------------------------------------------------- table

def crash_row(exe: str, mode: str, workdir: str) -> tuple[list, list, dict | None]:
    core = os.path.join(workdir, f"core-{mode}-{time.monotonic_ns()}")
    gdb = gdb_crash([exe, mode], core) if gdb_available() else []
    eu = eu_stack_core(core, exe) if eu_stack_available() and os.path.exists(core) else []
    if os.path.exists(core):
        os.unlink(core)
    return gdb, eu, report_of(collector("run", "--", exe, mode))


def jit_row(exe: str, how: str) -> tuple[list, list, dict | None]:
    proc = subprocess.Popen([exe, how], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"{exe} {how} did not get ready")
        time.sleep(0.05)
        gdb = gdb_live(proc.pid) if gdb_available() else []
        eu = eu_stack_live(proc.pid) if eu_stack_available() else []
        report = report_of(collector("attach", proc.pid))
    finally:
        proc.kill()
        proc.wait()
        if os.path.exists(f"/tmp/perf-{proc.pid}.map"):
            os.unlink(f"/tmp/perf-{proc.pid}.map")
    return gdb, eu, report


def table() -> str:
    rows = ["| fixture | gdb | eu-stack | collector | collector methods |",
            "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as d:
        for mode, flags in CRASHES:
            exe = build("crash.c", d, flags)
            gdb, eu, report = crash_row(exe, mode, d)
            rows.append(_row(f"crash {mode} ({'no CFI' if flags == NO_CFI else 'CFI'})",
                             gdb, eu, crashed_thread(report) if report else None))
        lu = ("-DWITH_LIBUNWIND",), ("-lunwind",)
        for how in JITS:
            exe = build("jit.c", d, *(lu if how == "libunwind" else ((), ())))
            gdb, eu, report = jit_row(exe, how)
            rows.append(_row(f"jit {how} (parked)", gdb, eu,
                             report["threads"][0] if report else None))
    return "\n".join(rows)


def _row(name: str, gdb: list, eu: list, thread: dict | None) -> str:
    ours = cell(frame_names(thread)) if thread else "no report"
    methods = ", ".join(f"{k} {v}" for k, v in sorted(thread["methods"].items())) \
        if thread else ""
    return (f"| {name} | {cell([n for _, n in gdb]) if gdb else 'n/a'} | "
            f"{cell([n for _, n in eu]) if eu else 'n/a'} | {ours} | {methods} |")


if __name__ == "__main__":
    print(table())
