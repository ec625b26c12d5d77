"""Fallback strategies on real crashes (`collector run`): a smashed return
address one frame up, and code with no CFI at all. gdb's and eu-stack's
frames of the same crash are printed beside ours."""
from __future__ import annotations

import pytest

from conftest import Variant

from .helpers import fmt_thread, names
from .test_run import base, crashed_thread, print_beside, run

NO_CFI = Variant("nocfi", ("-O2", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
                           "-fno-omit-frame-pointer"))


def test_smashed_return_address_one_frame_up(builder, tmp_path):
    exe = builder.build("crash.c")
    r, report = run(exe, "smash")
    assert report is not None, str(r)
    thread = crashed_thread(report)
    ns = [base(n) for n in names(thread)]
    assert ns[:2] == ["inner", "middle"], fmt_thread(thread)
    # middle's return address and saved rbp are garbage: the step out of it is
    # refused, and a fallback finds a return address higher up
    assert thread["frames"][2]["method"] in ("scan", "frame_pointer"), fmt_thread(thread)
    # outer, whose call's return address was smashed, is rebuilt from main's call to it
    assert ns[:4] == ["inner", "middle", "outer", "main"], fmt_thread(thread)
    assert all(f["pc"] != 0x4141414141414141 for f in thread["frames"]), fmt_thread(thread)
    print_beside(report, [exe, "smash"], tmp_path)


def test_no_cfi_at_all_reaches_main_by_frame_pointer(builder, tmp_path):
    exe = builder.build("crash.c", NO_CFI)
    r, report = run(exe, "write")
    assert report is not None, str(r)
    thread = crashed_thread(report)
    frames = thread["frames"]
    assert [base(n) for n in names(thread)[:4]] == ["inner", "middle", "outer", "main"], \
        fmt_thread(thread)
    assert [f["method"] for f in frames[1:4]] == ["frame_pointer"] * 3, fmt_thread(thread)
    for callee, caller in zip(frames, frames[1:4]):
        assert caller["sp"] == callee["cfa"] > callee["sp"], fmt_thread(thread)
    assert thread["methods"]["frame_pointer"] >= 3
    print_beside(report, [exe, "write"], tmp_path)


@pytest.mark.parametrize("mode", ["null", "smash"])
def test_no_cfi_and_a_bad_frame(builder, tmp_path, mode):
    exe = builder.build("crash.c", NO_CFI)
    r, report = run(exe, mode)
    assert report is not None, str(r)
    thread = crashed_thread(report)
    ns = [base(n) for n in names(thread)]
    assert "main" in ns, fmt_thread(thread)
    methods = [f["method"] for f in thread["frames"]]
    if mode == "null":
        assert methods[1:3] == ["dummy_fde", "frame_pointer"], fmt_thread(thread)
        assert ns[1:5] == ["inner", "middle", "outer", "main"], fmt_thread(thread)
    else:
        assert ns[:4] == ["inner", "middle", "outer", "main"] and "scan" in methods, \
            fmt_thread(thread)
    print_beside(report, [exe, mode], tmp_path)
