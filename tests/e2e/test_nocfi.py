"""No unwind tables: stale.c (every thread's stack holds usleep's old frames)
built by gcc and clang at -O2, as C and C++. The collector must show every
frame of each thread's chain and no other, and at least as many true frames
as gdb and eu-stack (bench/nocfi.py prints the whole table)."""
from __future__ import annotations

import pytest

from .test_run import REPO  # noqa: F401 (puts the repository on sys.path)

import bench.nocfi as nocfi


@pytest.mark.parametrize("cc", ["gcc", "clang", "g++"])
def test_no_false_frame_and_none_lost(cc, tmp_path):
    if not nocfi.available(cc):
        pytest.skip(f"{cc} is not installed (scripts/venv test installs it)")
    exe = nocfi.build(cc, "-O2", str(tmp_path))
    proc = nocfi.spawn(exe)
    try:
        threads, report = nocfi.collector_threads(proc.pid)
        ours = nocfi.total(threads, proc.pid)
        theirs = {}
        if nocfi.shutil.which("gdb"):
            theirs["gdb"] = nocfi.total(nocfi.gdb_threads(proc.pid), proc.pid)
        if nocfi.shutil.which("eu-stack"):
            theirs["eu-stack"] = nocfi.total(nocfi.eu_stack_threads(proc.pid), proc.pid)
    finally:
        proc.kill()
        proc.wait()
    shown = {t["tid"]: [(f["function"], f["method"]) for f in t["frames"]]
             for t in report["threads"]}
    assert len(threads) == 3, shown
    assert ours[1:] == (0, 0), f"true/false/lost {ours}: {shown}"
    for tool, (true, _, _) in theirs.items():
        assert ours[0] >= true, (tool, theirs, shown)
