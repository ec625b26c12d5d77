"""The fingerprint over synthetic reports: what changes between runs of one
bug (addresses, ASLR, pids, tids, the crash machinery above the bug) does
not change it; a different bug does."""
from __future__ import annotations

import hashlib
import random

from collector.delivery.fingerprint import FRAMES, compute

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
APP = "/opt/app/bin/server"


def frame(function, module=APP, method="cfi", **kw):
    rel = kw.pop("rel_pc", random.randrange(0x1000, 0x9000))
    return {"pc": None, "sp": None, "cfa": None, "module": module,
            "build_id": kw.pop("build_id", "ab" * 20), "rel_pc": rel, "function": function,
            "offset": random.randrange(64), "method": method, **kw}


def report(*threads, exe=APP):
    """Each call is another run: other load addresses, stack, pid and tids."""
    bases: dict[str, int] = {}
    ts = []
    for frames in threads:
        fs = [dict(f) for f in frames]
        for i, f in enumerate(fs):
            base = bases.setdefault(f["module"], random.randrange(0x5500_0000, 0x7f00_0000) << 12)
            f.update(index=i, pc=base + f["rel_pc"], sp=random.randrange(1 << 40))
        fs[0:1] = [{**fs[0], "method": "context"}] if fs else []
        ts.append({"tid": random.randrange(2, 1 << 22), "frames": fs})
    return {"process": {"pid": random.randrange(2, 1 << 22), "exe": exe}, "threads": ts}


BUG = [frame("parse_header"), frame("handle_request"), frame("worker_loop"),
       frame("start_thread", LIBC), frame("clone3", LIBC)]


def test_fingerprint_ignores_addresses_pids_and_tids():
    a, b = report(BUG), report(BUG)
    assert a["threads"][0]["frames"][0]["pc"] != b["threads"][0]["frames"][0]["pc"]
    assert compute(a) == compute(b)
    assert len(compute(a)) == 32 and int(compute(a), 16) >= 0


def test_fingerprint_is_sha256_of_its_keys():
    """Stored reports and storm buckets hold fingerprints: the hash must not change."""
    keys = ["fp1", "server!parse_header", "server!handle_request", "server!worker_loop",
            "libc.so.6!start_thread", "libc.so.6!clone3"]
    assert compute(report(BUG)) == hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]


def test_fingerprint_ignores_crash_machinery():
    abort_path = [frame("__pthread_kill_implementation", LIBC), frame("raise", LIBC),
                  frame("abort", LIBC), frame("__assert_fail_base", LIBC),
                  frame("__assert_fail", LIBC)]
    trampoline = [frame("__restore_rt", LIBC, signal_frame=True)]
    assert compute(report(abort_path + BUG)) == compute(report(BUG))
    assert compute(report(BUG[:1] + trampoline + BUG[1:])) == compute(report(BUG))
    unnamed_trampoline = [frame(None, "[vdso]", signal_frame=True)]
    assert compute(report(unnamed_trampoline + BUG)) == compute(report(BUG))


def test_fingerprint_differs_for_a_different_bug():
    other = [frame("parse_body")] + BUG[1:]
    assert compute(report(other)) != compute(report(BUG))
    deeper = [frame("parse_header"), frame("handle_upload")] + BUG[2:]
    assert compute(report(deeper)) != compute(report(BUG))
    moved = [frame("parse_header", "/opt/app/lib/libparse.so")] + BUG[1:]
    assert compute(report(moved)) != compute(report(BUG))


def test_fingerprint_uses_only_sure_frames():
    guessed = [BUG[0], frame("bogus_scan_hit", method="scan"),
               frame("bogus_fp", method="frame_pointer")] + BUG[1:]
    assert compute(report(guessed)) == compute(report(BUG))


def test_fingerprint_without_symbols_uses_build_id_and_rel_pc():
    stripped = [frame(None, rel_pc=0x1234), frame(None, rel_pc=0x2345)]
    same = [frame(None, rel_pc=0x1234), frame(None, rel_pc=0x2345)]
    moved = [frame(None, rel_pc=0x1238), frame(None, rel_pc=0x2345)]
    rebuilt = [frame(None, rel_pc=0x1234, build_id="cd" * 20), frame(None, rel_pc=0x2345)]
    assert compute(report(stripped)) == compute(report(same))
    assert compute(report(moved)) != compute(report(stripped))
    assert compute(report(rebuilt)) != compute(report(stripped))


def test_fingerprint_takes_the_crashed_thread():
    idle = [frame("pause", LIBC), frame("main")]
    a = report(idle, BUG)
    a["threads"][1]["crashed"] = True
    b = report(idle, [frame("other_bug")] + BUG[1:])
    b["threads"][1]["crashed"] = True
    assert compute(a) != compute(b)
    assert compute(a) == compute(report(BUG))


def test_fingerprint_only_top_frames_count():
    top = (BUG * 2)[:FRAMES]
    tail_a = top + [frame(f"caller_{i}") for i in range(10)]
    tail_b = top + [frame(f"other_caller_{i}") for i in range(10)]
    assert compute(report(tail_a)) != compute(report(top[:-1] + tail_b[FRAMES:]))
    assert compute(report(tail_a)) == compute(report(tail_b))


def test_fingerprint_without_frames_groups_by_executable():
    assert compute(report([])) == compute(report([]))
    assert compute(report([])) != compute(report([], exe="/usr/bin/other"))
