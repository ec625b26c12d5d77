"""Crash-storm control through the real delivery path (file sink, state in
a temp dir): a burst of 1,000 reports of one fingerprint is held to the
token bucket, the suppressed count handed on is exact, the state stays
bounded, and separate processes share the buckets."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
import types
import uuid
from pathlib import Path

from collector import config
from collector.delivery import deliver
from collector.delivery.deliver import Delivery

REPO = Path(__file__).resolve().parents[2]


def crash(function: str) -> dict:
    frames = [{"index": i, "pc": 0x401000 + i, "sp": 0x7ffc0000 + 16 * i, "cfa": None,
               "module": "/usr/bin/prog", "build_id": None, "rel_pc": 0x1000 + i,
               "function": f, "offset": 4, "method": "cfi" if i else "context"}
              for i, f in enumerate([function, "caller", "main"])]
    return {"schema_version": 1, "report_id": str(uuid.uuid4()), "source": "core",
            "time": "2026-01-01T00:00:00.000Z",
            "process": {"pid": 42, "exe": "/usr/bin/prog", "cmdline": ["prog"]},
            "threads": [{"tid": 42, "frames": frames, "crashed": True}]}


def make_config(tmp_path, **storm) -> config.Config:
    p = tmp_path / "c.toml"
    p.write_text(f'[collector]\nstate_dir = "{tmp_path}/state"\n'
                 f'[spool]\ndir = "{tmp_path}/spool"\n'
                 f'[[sink]]\ntype = "file"\npath = "{tmp_path}/out.jsonl"\n')
    return config.load(str(p), tuple(f"storm.{k}={v}" for k, v in storm.items()), env={})


def delivered(tmp_path) -> list[dict]:
    out = tmp_path / "out.jsonl"
    return [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []


def test_storm_burst_of_1000_is_held(tmp_path, monkeypatch):
    burst, per_minute = 10, 2.0
    d = Delivery(make_config(tmp_path, burst=burst, per_minute=per_minute))
    tracemalloc.start()
    t0, cpu0 = time.monotonic(), time.process_time()
    for _ in range(1000):
        d.deliver(crash("parse"))
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    got = delivered(tmp_path)
    bound = burst + int(per_minute * elapsed / 60) + 1
    print(f"storm: {len(got)} delivered of 1000 in {elapsed:.2f}s "
          f"({cpu * 1000 / 1000:.2f} ms CPU per report), peak Python memory {peak / 1024:.0f} KiB")
    assert burst <= len(got) <= bound
    assert len({r["fingerprint"] for r in got}) == 1
    state = tmp_path / "state" / "storm.json"
    assert state.stat().st_size < 4096
    assert peak < 8 << 20
    # a minute later the bucket has refilled: the next report says how many went
    later = time.time() + 60
    monkeypatch.setattr(deliver, "time", types.SimpleNamespace(time=lambda: later))
    d.deliver(crash("parse"))
    got = delivered(tmp_path)
    counted = sum(r.get("suppressed", {}).get("count", 0) for r in got)
    assert len(got) + counted == 1001, [r.get("suppressed") for r in got]
    print(f"storm: the next report a minute later carries suppressed={got[-1]['suppressed']}")
    assert got[-1]["suppressed"]["count"] >= 1000 - bound
    assert got[-1]["suppressed"]["first"] <= got[-1]["suppressed"]["last"]


def test_storm_other_fingerprints_and_global_limit(tmp_path):
    d = Delivery(make_config(tmp_path, burst=2, per_minute=0.01, global_burst=25,
                             global_per_minute=0.01, max_fingerprints=50))
    for _ in range(3):
        d.deliver(crash("a"))
    assert len(delivered(tmp_path)) == 2  # a: suppressed after its burst
    d.deliver(crash("b"))
    assert len(delivered(tmp_path)) == 3  # b has its own bucket
    for i in range(200):
        d.deliver(crash(f"f{i}"))
    assert len(delivered(tmp_path)) == 25  # the global bucket
    state = json.loads((tmp_path / "state" / "storm.json").read_text())
    assert len(state["fingerprints"]) <= 50


def test_storm_attach_is_never_suppressed(tmp_path):
    d = Delivery(make_config(tmp_path, burst=1, per_minute=0.01))
    for _ in range(5):
        d.deliver({**crash("a"), "source": "attach"})
    assert len(delivered(tmp_path)) == 5


CHILD = """
import sys
sys.path[:0] = [{repo!r}, {here!r}]
from test_storm import crash
from collector import config
from collector.delivery.deliver import Delivery
Delivery(config.load({path!r}, {sets!r}, env={{}})).deliver(crash("shared"))
"""


def test_storm_state_is_shared_by_processes(tmp_path):
    """12 collectors at once (as under core_pattern): exactly `burst` get
    through, and every other one is counted."""
    cfg = make_config(tmp_path)  # written once: a child must not read it half-written
    code = CHILD.format(repo=str(REPO), here=str(Path(__file__).parent), path=cfg.path,
                        sets=("storm.burst=3", "storm.per_minute=0.001"))
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
             for _ in range(12)]
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
        errs.append(err.decode())
    state = json.loads((tmp_path / "state" / "storm.json").read_text())
    (bucket,) = state["fingerprints"].values()
    assert (len(delivered(tmp_path)), bucket["suppressed"]) == (3, 9), errs
    assert os.stat(tmp_path / "state").st_mode & 0o777 == 0o700
