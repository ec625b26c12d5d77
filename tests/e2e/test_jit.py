"""Machine code in an anonymous RWX page calling back into C, which parks
(`collector attach`): undescribed (the fallbacks pass it), named by a perf
map, described by the GDB JIT interface (an in-memory ELF with .eh_frame:
plain CFI through it) and by libunwind's _U_dyn_register (proc-info format).
gdb and eu-stack look at the same parked process; both are printed beside us."""
from __future__ import annotations

import os
import shutil

import pytest

from conftest import VARIANTS, Variant

from .helpers import fmt_thread, names
from .test_run import base
from bench.fallbacks import (eu_stack_available, eu_stack_live, gdb_available,  # noqa: I001
                             gdb_live, side_by_side)

TOP = ["park", "jit_callback"]
LIBUNWIND_HEADER = "/usr/include/x86_64-linux-gnu/libunwind.h"


def anonymous_code(pid: int) -> list[tuple[int, int]]:
    """Executable mappings of `pid` that no file backs."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if "x" in parts[1] and parts[4] == "0" and len(parts) < 6:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi))
    return out


def attach_jit(builder, spawn, collector, how: str, variant=VARIANTS["O2-nofp"],
               extra=()):
    exe = builder.build("jit.c", variant, extra=extra)
    target = spawn(exe, how)
    try:
        r = collector("attach", target.pid)
        assert r.rc == 0, str(r)
        thread = r.report["threads"][0]
        gdb = gdb_live(target.pid) if gdb_available() else []
        eu = eu_stack_live(target.pid) if eu_stack_available() else []
        print(f"jit {how}:\n" + side_by_side(thread["frames"], gdb, eu))
        jit = next((i for i, f in enumerate(thread["frames"])
                    if any(lo <= f["pc"] < hi for lo, hi in anonymous_code(target.pid))), None)
        assert jit is not None, f"no frame in the JIT page\n{fmt_thread(thread)}"
        ns = [base(n) for n in names(thread)]
        assert ns[jit - 2:jit] == TOP and ns[jit + 1:jit + 3] == ["run_jit", "main"], \
            fmt_thread(thread)
        return target, thread, jit
    finally:
        if os.path.exists(f"/tmp/perf-{target.pid}.map"):
            os.unlink(f"/tmp/perf-{target.pid}.map")


def test_undescribed_jit_code_is_passed_by_the_fallbacks(builder, spawn, collector):
    _, thread, jit = attach_jit(builder, spawn, collector, "none")
    frames = thread["frames"]
    assert frames[jit]["module"] is None and frames[jit]["function"] is None
    assert frames[jit + 1]["method"] in ("frame_pointer", "scan"), fmt_thread(thread)


def test_a_perf_map_names_jit_code(builder, spawn, collector):
    target, thread, jit = attach_jit(builder, spawn, collector, "perf")
    frame = thread["frames"][jit]
    assert frame["function"] == "jit_function" and frame["offset"] == 0x15, fmt_thread(thread)
    assert frame["module"] == f"/tmp/perf-{target.pid}.map"
    assert thread["frames"][jit + 1]["method"] in ("frame_pointer", "scan")


def test_gdb_jit_interface_gives_cfi_through_the_jit_object(builder, spawn, collector):
    target, thread, jit = attach_jit(builder, spawn, collector, "gdb")
    frame = thread["frames"][jit]
    assert frame["function"] == "jit_function", fmt_thread(thread)
    assert frame["module"].startswith("[jit 0x"), fmt_thread(thread)
    assert {f["method"] for f in thread["frames"][1:]} == {"cfi"}, fmt_thread(thread)
    if gdb_available():   # gdb reads the same JIT object: the same frames to main
        gdb = [n for _, n in gdb_live(target.pid)]
        assert "main" in gdb and "jit_function" in gdb, gdb
        assert gdb.index("main") == [base(n) for n in names(thread)].index("main")


@pytest.mark.skipif(not os.path.exists(LIBUNWIND_HEADER) or not shutil.which("gcc"),
                    reason="libunwind-dev is not installed (scripts/venv test installs it)")
def test_libunwind_proc_info_describes_jit_code(builder, spawn, collector):
    variant = Variant("O2-libunwind", ("-O2", "-DWITH_LIBUNWIND"))
    _, thread, jit = attach_jit(builder, spawn, collector, "libunwind", variant, ("-lunwind",))
    frames = thread["frames"]
    assert frames[jit]["function"] == "jit_function", fmt_thread(thread)
    assert frames[jit]["module"] == "[libunwind jit_function]"
    # the step out of the JIT frame used the registered directives
    assert frames[jit + 1]["method"] == "jit", fmt_thread(thread)
    assert frames[jit + 1]["sp"] == frames[jit]["cfa"]
    assert not {"scan", "frame_pointer"} & {f["method"] for f in frames}, fmt_thread(thread)
