"""The fingerprint of real processes: two runs of one program parked in the
same place (other load addresses, pids, tids) get the same one; programs
stopped in different places get different ones."""
from __future__ import annotations


def fingerprint_of(collector, pid) -> tuple[str, dict]:
    r = collector("attach", pid)
    assert r.rc == 0, str(r)
    return r.report["fingerprint"], r.report


def test_fingerprint_same_program_same_place(builder, spawn, collector):
    exe = builder.build("chain.c", "pie")
    a, b = spawn(exe, "2"), spawn(exe, "2")
    fa, ra = fingerprint_of(collector, a.pid)
    fb, rb = fingerprint_of(collector, b.pid)
    pcs = lambda r: [f["pc"] for f in r["threads"][0]["frames"]]  # noqa: E731
    assert pcs(ra) != pcs(rb), "ASLR should have moved the code"
    assert {t["tid"] for t in ra["threads"]}.isdisjoint(t["tid"] for t in rb["threads"])
    assert fa == fb


def test_fingerprint_different_places_differ(builder, spawn, collector):
    chain = spawn(builder.build("chain.c", "pie"))
    recurse = spawn(builder.build("recurse.c", "pie"), "20")
    other_build = spawn(builder.build("chain.c", "O0-fp"))
    prints = {fingerprint_of(collector, t.pid)[0] for t in (chain, recurse, other_build)}
    assert len(prints) == 3
