"""Very deep stacks: which frames a walk keeps (unwinder/keep.py), how the
report describes the ones it leaves out, and the text that collapses
repeated cycles. Stacks are built with tests/unit/stacks.py."""
from types import SimpleNamespace

import pytest

from collector import report, text
from stacks import Code, Stack, walk
from unwinder import keep
from unwinder.regs import RBP, RIP, RSP


def kept(pcs, every=None):
    """Kept's answer for frames of these pcs, bound() every `every` frames
    as a walk calls it (None: only at the end)."""
    k = keep.Kept()
    for i, pc in enumerate(pcs):
        k.append(SimpleNamespace(index=i, pc=pc, method="cfi" if pc != 6 else "scan"))
        if every and i % every == 0:
            k.bound()
            assert len(k.frames) <= keep.KEEP_ALL
    return k.result()


def test_every_frame_is_kept_up_to_keep_all():
    frames, elided = kept(range(keep.KEEP_ALL))
    assert [f.pc for f in frames] == list(range(keep.KEEP_ALL)) and elided is None


@pytest.mark.parametrize("every", [None, 1, 100, 256])
def test_beyond_keep_all_the_innermost_and_outermost_are_kept(every):
    n = keep.KEEP_ALL + 5001
    pcs = [0, 1, 2] + [100 + i % 3 for i in range(n - 6)] + [7, 8, 9]
    frames, elided = kept(pcs, every)
    assert [f.pc for f in frames] == pcs[:keep.KEEP_INNER] + pcs[-keep.KEEP_OUTER:]
    assert elided.count == n - keep.KEEP_INNER - keep.KEEP_OUTER
    left_out = pcs[keep.KEEP_INNER:-keep.KEEP_OUTER]
    assert [f.pc for f in elided.cycle] == left_out[:3]
    assert elided.run == elided.count and elided.repeats == elided.count // 3


@pytest.mark.parametrize("every", [None, 7, 256])
def test_a_run_that_breaks_is_counted_up_to_the_break(every):
    n = keep.KEEP_ALL + 1000
    pcs = [5] * (keep.KEEP_INNER + 300) + [6] + [5] * (n - keep.KEEP_INNER - 301)
    _, elided = kept(pcs, every)
    assert [f.pc for f in elided.cycle] == [5] and elided.run == 300 == elided.repeats
    assert elided.methods == {"cfi": elided.count - 1, "scan": 1}


@pytest.mark.parametrize("every", [None, 5, 256])
def test_a_cycle_of_five_broken_late_in_any_phase(every):
    cycle = [10, 11, 12, 13, 14]
    middle = [cycle[i % 5] for i in range(3333)] + [99] + [cycle[i % 5] for i in range(4000)]
    pcs = list(range(keep.KEEP_INNER)) + middle + list(range(keep.KEEP_OUTER))
    frames, elided = kept(pcs, every)
    assert [f.pc for f in frames] == pcs[:keep.KEEP_INNER] + pcs[-keep.KEEP_OUTER:]
    assert elided.count == len(middle) and elided.run == 3333 and elided.repeats == 666
    assert [f.pc for f in elided.cycle] == cycle


def test_no_cycle_is_no_cycle():
    _, elided = kept(range(keep.KEEP_ALL + 100))
    assert elided.cycle == [] and elided.repeats == 0 and elided.count == 6100


def recursion(depth: int, tail: int = 0):
    """A frame-pointer chain of `depth` frames returning to one call site
    (recursion), under `tail` frames of distinct call sites."""
    code, stack = Code(), Stack(size=(depth + tail + 8) * 16)
    stack.push(0)
    rbp = 0
    for _ in range(tail):
        stack.push(code.call())
        rbp = stack.push(rbp)
    ra = code.call()
    for _ in range(depth):
        stack.push(ra)
        rbp = stack.push(rbp)
    return code, stack, rbp, ra


def test_a_deep_walk_keeps_4000_frames_and_describes_the_rest():
    code, stack, rbp, ra = recursion(12_000, tail=3)
    trace = walk(stack, code, {RIP: 0x40_0800, RSP: stack.sp, RBP: rbp})
    assert len(trace.frames) == keep.KEEP_INNER + keep.KEEP_OUTER, trace.stop_reason
    total = 1 + 12_000 + 3           # frame 0, the recursion, the tail
    assert trace.elided.count == total - 4000 and trace.gap == keep.KEEP_INNER
    assert [f.pc for f in trace.elided.cycle] == [ra] and trace.elided.repeats == total - 4000
    assert trace.frames[-1].index == total - 1     # the walk's own depth, outermost kept
    thread = report.thread_dict(SimpleNamespace(tid=1, name="t", state="S", error=None),
                                {RIP: 0x40_0800, RSP: stack.sp}, trace)
    assert [f["index"] for f in thread["frames"]] == list(range(4000))
    assert thread["frames"][2000]["elided_before"] == total - 4000
    assert thread["elided"]["frames"] == total - 4000
    assert thread["elided"]["cycle"][0]["pc"] == ra
    assert thread["methods"] == {"context": 1, "frame_pointer": total - 1}
    lines = text.render({"process": {"pid": 1}, "threads": [thread], "errors": []}).splitlines()
    assert lines[2:6] == [
        "#0   0x0000000000400800 ??",
        f"#1-#1999 {ra:#x} (x1999)",
        f"#2000-#{total - 2001} {total - 4000} frames left out: {ra:#x} (x{total - 4000})",
        f"#{total - 2000}-#{total - 4} {ra:#x} (x1997)"], lines[:8]
    assert lines[6].startswith(f"#{total - 3} ") and len(lines) == 10, lines


def test_the_walk_stops_at_its_time_budget():
    code, stack, rbp, _ = recursion(600)
    trace = walk(stack, code, {RIP: 0x40_0800, RSP: stack.sp, RBP: rbp}, time_budget=0)
    assert len(trace.frames) == 256 and "time budget" in trace.stop_reason


def test_text_collapses_a_cycle_of_two_functions_and_leaves_short_runs():
    frames = [{"index": i, "pc": 0x1000 + i, "function": name, "offset": 0, "module": None,
               "method": "cfi"} for i, name in enumerate(["x"] + ["a", "b"] * 5 + ["y", "y", "z"])]
    thread = {"tid": 1, "name": "t", "frames": frames, "stop_reason": "end"}
    lines = text.render({"process": {"pid": 1}, "threads": [thread], "errors": []}).splitlines()
    assert [line.split()[0] for line in lines[2:-1]] == ["#0", "#1-#10", "#11", "#12", "#13"]
    assert lines[3] == "#1-#10 a > b (x5)"
