"""JIT code described only by FDEs registered with libgcc
(tests/fixtures/regframe.c). Its frame defeats the fallbacks: rbp points at a
fake frame whose stale return address (in decoy) lies below the real one,
so the frame-pointer chain and a scan both continue in decoy. The registered
FDE takes the walk to run_jit and main: live and from a kernel core,
linked against libgcc_s.so.1 (heads decoded from its code; the lists and
the sorted vector) and -static (heads by symbol). Unregistered or
deregistered, the walk goes to decoy: the check can fail. gdb and eu-stack,
which do not read the registry, are printed beside us."""
from __future__ import annotations

import shutil

import pytest

from conftest import VARIANTS

from .corepattern import can_own, crash, owned_core_pattern, short_tempdir
from .helpers import fmt_thread, names
from .test_core_file import core_report
from .test_jit import anonymous_code
from .test_run import base
from bench.fallbacks import (eu_stack_available, eu_stack_live, gdb_available,  # noqa: I001
                             gdb_live, side_by_side)

JIT_CFA = 64        # the JIT frame's CFA is its sp + 64 (push, push, sub $0x28)


def attach(builder, spawn, collector, how: str, variant: str = "O2-nofp"):
    exe = builder.build("regframe.c", variant)
    target = spawn(exe, how)
    r = collector("attach", target.pid)
    assert r.rc == 0, str(r)
    assert not [e for e in r.report["errors"] if "libgcc" in e], r.report["errors"]
    thread = r.report["threads"][0]
    gdb = gdb_live(target.pid) if gdb_available() else []
    eu = eu_stack_live(target.pid) if eu_stack_available() else []
    print(f"regframe {how} {variant}:\n" + side_by_side(thread["frames"], gdb, eu))
    code = anonymous_code(target.pid)
    jit = next((i for i, f in enumerate(thread["frames"])
                if any(lo <= f["pc"] < hi for lo, hi in code)), None)
    assert jit is not None and base(names(thread)[jit - 1]) == "jit_callback", fmt_thread(thread)
    return thread, jit


def assert_through_the_fde(thread: dict, jit: int):
    frames, ns = thread["frames"], [base(n) for n in names(thread)]
    frame = frames[jit]
    assert frame["module"].startswith("[libgcc 0x") and frame["function"] is None, \
        fmt_thread(thread)
    assert frame["cfa"] == frame["sp"] + JIT_CFA, fmt_thread(thread)
    assert ns[jit + 1:jit + 3] == ["run_jit", "main"], fmt_thread(thread)
    assert frames[jit + 1]["method"] == "cfi" and frames[jit + 1]["sp"] == frame["cfa"]
    assert "decoy" not in ns and {f["method"] for f in frames[1:]} == {"cfi"}, fmt_thread(thread)


@pytest.mark.parametrize("how", ["register", "seen", "table"])
def test_a_registered_fde_takes_the_walk_past_the_jit_frame(builder, spawn, collector, how):
    assert_through_the_fde(*attach(builder, spawn, collector, how))


@pytest.mark.parametrize("how", ["none", "deregister"])
def test_without_a_registered_fde_the_fallbacks_take_the_stale_address(builder, spawn,
                                                                       collector, how):
    thread, jit = attach(builder, spawn, collector, how)
    frames = thread["frames"]
    assert frames[jit]["module"] is None, fmt_thread(thread)
    assert base(names(thread)[jit + 1]) == "decoy", fmt_thread(thread)
    assert frames[jit + 1]["method"] == "frame_pointer", fmt_thread(thread)


@pytest.mark.parametrize("how", ["register", "seen"])
def test_static_binary_registry_found_by_symbol(builder, spawn, collector, how):
    assert_through_the_fde(*attach(builder, spawn, collector, how, "static"))


def test_static_binary_deregistered_fde_is_not_used(builder, spawn, collector):
    thread, jit = attach(builder, spawn, collector, "deregister", "static")
    assert base(names(thread)[jit + 1]) == "decoy", fmt_thread(thread)


@pytest.fixture(scope="module")
def cores(builder):
    """Kernel cores of regframe aborting inside the JIT code's callee."""
    if can_own():
        pytest.skip(can_own())
    d = short_tempdir()
    out = {}
    with owned_core_pattern(f"{d}/core.%p", pipe_limit=0):
        for variant in ("O2-nofp", "static"):
            exe = builder.build("regframe.c", VARIANTS[variant])
            out[variant] = d / f"core.{crash([exe, 'register', 'abort'])}"
    yield out
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("variant", ["O2-nofp", "static"])
def test_from_a_core(cores, variant):
    report = core_report(cores[variant])
    assert report["errors"] == [], report["errors"]
    thread = next(t for t in report["threads"] if t.get("crashed"))
    jit = [base(n) for n in names(thread)].index("jit_callback") + 1
    assert_through_the_fde(thread, jit)
