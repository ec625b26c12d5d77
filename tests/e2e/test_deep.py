"""The whole stack: a stack overflow of 200,000+ frames crashing under
`collector run` (a report of bounded size, the cycle described, main
reached), a 2,000-deep recursion reaching main by default, and a NULL call
caught by a SIGSEGV handler on an alternate stack (through the signal frame
to main, as gdb sees it)."""
from __future__ import annotations

import json
import shutil

import pytest

from collector import text
from collector.service.pipe import KERNEL_ARGS

from .corepattern import (FIXTURE_EXE, can_own, crash, handler_script, owned_core_pattern,
                          short_tempdir, wait_report)
from .helpers import collector_argv, fmt_thread, names, run_command, schema_errors
from .test_attach import attach_ok
from .test_run import crashed_thread

import bench.fallbacks as fb  # test_run put the repository on sys.path

STACK_LIMIT = 11 << 20      # ulimit -s for the overflow: 48-byte frames, ~240,000 of them


def test_a_stack_overflow_is_reported_whole_in_bounded_size(builder):
    exe = builder.build("overflow.c")
    argv = ["prlimit", f"--stack={STACK_LIMIT}", "--", *collector_argv("run", "--", exe)]
    r = run_command(argv, timeout=120)
    lines = r.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), str(r)
    report = json.loads(lines[-1])
    assert not schema_errors(report), schema_errors(report)[:10]
    thread = crashed_thread(report)
    frames, elided = thread["frames"], thread["elided"]
    assert len(frames) <= 4000 + 10 and len(lines[-1]) < 4 << 20, len(lines[-1])
    ns = names(thread)
    gap = next(i for i, f in enumerate(frames) if f.get("elided_before"))
    assert frames[gap]["elided_before"] == elided["frames"]
    main = ns.index("main")
    depth = main + elided["frames"]             # ping/pong frames, the kept and the left out
    assert depth >= 200_000, fmt_thread(thread)[:3000]
    # frame 0 is the faulting ping or pong; all down to main alternate, the
    # frames left out included
    assert set(ns[:main]) == {"ping", "pong"}, fmt_thread(thread)[:3000]
    for part in (ns[:gap], ns[gap:main]):
        assert all(a != b for a, b in zip(part, part[1:])), fmt_thread(thread)[:3000]
    assert (ns[gap - 1] == ns[gap]) == (elided["frames"] % 2 == 1), elided["frames"]
    assert sorted(c["function"] for c in elided["cycle"]) == ["ping", "pong"], elided
    assert elided["cycle"][0]["function"] != ns[gap - 1], elided
    assert elided["cycle_frames"] == elided["frames"] and \
        elided["repeats"] == elided["frames"] // 2, elided
    # the depth the stack itself says: equal frames from frame 1's sp to
    # main's (frame 0 faulted somewhere in its prologue)
    size = frames[2]["sp"] - frames[1]["sp"]
    assert all(b["sp"] - a["sp"] == size for a, b in zip(frames[1:gap - 1], frames[2:gap]))
    assert frames[main]["sp"] - frames[1]["sp"] == size * (depth - 1), (size, depth)
    assert report["timings"]["unwind_ms"] < 60_000
    rendered = text.render(report)
    assert len(rendered.splitlines()) < 40, rendered[:3000]
    assert f"#{gap}-#{gap + elided['frames'] - 1} {elided['frames']} frames left out: " \
           f"{elided['cycle'][0]['function']} > {elided['cycle'][1]['function']} " \
           f"(x{elided['repeats']})" in rendered, rendered[:3000]


def test_a_stack_overflow_through_the_kernel_handler(builder):
    """The same overflow dumped to the pipe handler (its worker unwinds the
    core): a bounded report whose cycle and depth reach main."""
    if can_own():
        pytest.skip(can_own())
    d = short_tempdir()
    try:
        (d / "r").mkdir(mode=0o700)
        exe = d / f"{FIXTURE_EXE}-overflow"  # the handler takes crashes of such names only
        shutil.copy(builder.build("overflow.c"), exe)
        # the crashing thread's whole stack is kept: its 11 MiB, not the default
        # 256K; and the worker may take longer than its default 30 s on a loaded machine
        config = d / "collector.toml"
        config.write_text(f'[collector]\nstate_dir = "{d}/state"\n[spool]\ndir = "{d}/spool"\n'
                          '[worker]\ntimeout = 300\ncpu = 300\n')
        handler = handler_script(d, {"COLLECTOR_CONFIG": config},
                                 args="--stack-window 16M --keep 64M")
        with owned_core_pattern(f"|{handler} core --from-kernel --report-dir {d / 'r'} "
                                f"{KERNEL_ARGS}", pipe_limit=4):
            pid = crash(["prlimit", f"--stack={STACK_LIMIT}", "--", exe], timeout=120)
            report, = wait_report(d / "r", [pid], timeout=180)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    thread = crashed_thread(report)
    assert "elided" in thread, (report["errors"], report["core"], fmt_thread(thread)[-3000:])
    frames, elided = thread["frames"], thread["elided"]
    assert len(frames) <= 4000 + 10, len(frames)
    ns = names(thread)
    main = ns.index("main")
    assert main + elided["frames"] >= 200_000, fmt_thread(thread)[:3000]
    assert set(ns[:main]) == {"ping", "pong"}, fmt_thread(thread)[:3000]
    assert sorted(c["function"] for c in elided["cycle"]) == ["ping", "pong"], elided


def test_a_2000_deep_recursion_reaches_main_by_default(builder, spawn, collector):
    depth = 2000
    t = spawn(builder.build("recurse.c"), depth)
    report = attach_ok(collector, t.pid)
    thread = report["threads"][0]
    ns = names(thread)
    assert ns.count("rec") == depth and "main" in ns, fmt_thread(thread)[:3000]
    assert "elided" not in thread
    first = ns.index("rec")
    assert f"#{first}-#{first + depth - 1} rec (x{depth})" in text.render(report)


@pytest.mark.parametrize("pointer", ["0x10", "0"])
def test_a_null_call_caught_on_an_alternate_stack_reaches_main(builder, spawn, collector,
                                                               pointer):
    t = spawn(builder.build("altstack.c"), pointer)
    report = attach_ok(collector, t.pid)
    thread = report["threads"][0]
    frames, ns = thread["frames"], names(thread)
    i = ns.index("park")
    assert ns[i:i + 3] == ["park", "on_segv", "__restore_rt"], fmt_thread(thread)
    assert frames[i + 2].get("signal_frame"), fmt_thread(thread)
    assert frames[i + 3]["pc"] == int(pointer, 0), fmt_thread(thread)
    assert ns[i + 4:i + 8] == ["inner", "middle", "outer", "main"], fmt_thread(thread)
    # the handler's frames are on the alternate stack, the rest on the main one
    assert abs(frames[i + 4]["sp"] - frames[i]["sp"]) > 1 << 16, fmt_thread(thread)
    if fb.gdb_available():
        gdb = [n for _, n in fb.gdb_live(t.pid)]
        assert gdb[i + 4:i + 8] == ns[i + 4:i + 8], (gdb, fmt_thread(thread))
