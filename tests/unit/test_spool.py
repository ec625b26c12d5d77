"""The spool on its own: order, permissions, one sink settled at a time,
the cap (oldest dropped and counted), damaged entries set aside."""
from __future__ import annotations

import os
import stat
import uuid

from collector.delivery.spool import Spool


def spool(tmp_path, **kw) -> Spool:
    settings = {"dir": str(tmp_path / "spool"), "max_reports": 100, "max_bytes": 1 << 20,
                "retry_after": 30.0, **kw}
    return Spool(settings)


def rep(n: int, pad: int = 0) -> dict:
    return {"report_id": str(uuid.uuid4()), "n": n, "pad": "x" * pad}


def test_spool_order_and_permissions(tmp_path):
    s = spool(tmp_path)
    with s.locked():
        for n in range(5):
            s.add(rep(n), ["a", "b"])
        names = s.entries()
        assert [s.report(x)["n"] for x in names] == list(range(5))
        assert all(s.pending(x) == ["a", "b"] for x in names)
    assert stat.S_IMODE(os.stat(s.dir).st_mode) == 0o700
    for x in os.listdir(s.dir):
        assert stat.S_IMODE(os.stat(os.path.join(s.dir, x)).st_mode) == 0o600, x


def test_spool_settle_one_sink_at_a_time(tmp_path):
    s = spool(tmp_path)
    with s.locked():
        s.add(rep(0), ["a", "b"])
        (name,) = s.entries()
        s.settle(name, "a")
        assert s.pending(name) == ["b"] and s.report(name)["n"] == 0
        s.settle(name, "b")
        assert s.entries() == []


def test_spool_cap_drops_oldest_and_counts(tmp_path):
    s = spool(tmp_path, max_reports=3)
    with s.locked():
        for n in range(5):
            s.add(rep(n), ["a"])
        assert [s.report(x)["n"] for x in s.entries()] == [2, 3, 4]
        assert s.take_dropped() == 2
        assert s.take_dropped() == 0
    b = spool(tmp_path / "b", max_bytes=10_000)
    with b.locked():
        for n in range(10):
            b.add(rep(n, pad=3000), ["a"])
        kept = [b.report(x)["n"] for x in b.entries()]
        assert kept == list(range(10 - len(kept), 10)) and 1 <= len(kept) <= 3
        assert sum(b.size(x) for x in b.entries()) <= 10_000
        assert b.take_dropped() == 10 - len(kept)


def test_spool_damaged_entry_is_set_aside(tmp_path):
    s = spool(tmp_path)
    with s.locked():
        s.add(rep(0), ["a"])
        (name,) = s.entries()
        with open(os.path.join(s.dir, name), "wb") as f:
            f.write(b"not json\n")
        assert s.owed() == {}
        assert os.path.exists(os.path.join(s.dir, f".corrupt-{name}"))


def test_spool_damaged_entries_set_aside_are_capped(tmp_path):
    s = spool(tmp_path, max_reports=3)
    with s.locked():
        damaged = []
        for n in range(6):
            s.add(rep(n), ["a"])
            name = s.entries()[-1]
            with open(os.path.join(s.dir, name), "wb") as f:
                f.write(b"not json\n")
            damaged.append(name)
            assert s.owed() == {}
        left = sorted(x for x in os.listdir(s.dir) if x.startswith(".corrupt-"))
        assert left == [f".corrupt-{n}" for n in damaged[-3:]]  # the oldest went first


def test_spool_resting_sink(tmp_path):
    s = spool(tmp_path, retry_after=30.0)
    with s.locked():
        s.mark("http", 1000.0)
        assert s.resting("http", 1010.0) and not s.resting("http", 1031.0)
        assert not s.resting("file", 1010.0)
        s.mark("http", None)
        assert not s.resting("http", 1010.0)


def test_spool_set_aside_is_out_of_the_queue_and_capped(tmp_path):
    s = spool(tmp_path, max_reports=3)
    with s.locked():
        s.add(rep(0), ["a"])
        kept = [s.set_aside(rep(n), "b") for n in range(1, 6)]
        assert [s.report(x)["n"] for x in s.entries()] == [0]  # the queue has only the owed one
        left = sorted(x for x in os.listdir(s.dir) if x.startswith(".rejected-"))
        assert left == kept[-3:]  # the oldest went first
        assert s.pending(left[0]) == ["b"] and s.report(left[0])["n"] == 3
