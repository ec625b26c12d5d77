"""The local store and `collector list` / `collector show`: real crashes
through the kernel's pipe handler land in STATE_DIR/reports.db; list and
show read them back with coredumpctl's matches; retention; many writers."""
from __future__ import annotations

import base64
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import time
import zlib

import pytest

from collector import config as cfgmod
from collector.delivery.store import Store, StoreError
from collector.service.pipe import KERNEL_ARGS

from .corepattern import (can_own, crash, crashed_thread, handler_script, owned_core_pattern,
                          short_tempdir, wait_report)
from .helpers import REPO, collector_argv, collector_env, names, run_command


@pytest.fixture
def home():
    d = short_tempdir()
    (d / "r").mkdir(mode=0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def env_for(state) -> dict:
    return dict(collector_env(), COLLECTOR_STATE_DIR=str(state))


def cli(state, *args):
    return run_command(collector_argv(*args), env=env_for(state))


@pytest.mark.skipif(can_own() is not None, reason=str(can_own()))
def test_kernel_crashes_listed_and_shown(builder, home, spawn):
    exe = builder.build("core_crash.c")
    state = home / "s"
    handler = handler_script(home, {"COLLECTOR_STATE_DIR": state})
    pattern = f"|{handler} core --from-kernel --report-dir {home / 'r'} {KERNEL_ARGS}"
    with owned_core_pattern(pattern, pipe_limit=4):
        segv = crash([exe, "segv", 4])
        abort = crash([exe, "abort"])
        written = {r["process"]["pid"]: r for r in wait_report(home / "r", [segv, abort])}
    assert (state / "reports.db").stat().st_mode & 0o077 == 0, "the store is readable by others"

    res = cli(state, "list")
    assert res.rc == 0, res
    header, *rows = res.stdout.splitlines()
    assert header.split() == ["TIME", "PID", "UID", "GID", "SIG", "EXE", "FINGERPRINT"]
    assert [r.split()[7] for r in rows] == ["SEGV", "ABRT"], rows  # oldest first
    assert all(str(exe) in r for r in rows), rows

    got = json.loads(cli(state, "list", "--json").stdout)
    assert [r["pid"] for r in got] == [segv, abort]
    assert [r["signal_name"] for r in got] == ["SIGSEGV", "SIGABRT"]
    assert {r["report_id"] for r in got} == {w["report_id"] for w in written.values()}

    def pids(*match):
        res = cli(state, "list", "--json", *match)
        return [r["pid"] for r in json.loads(res.stdout)] if res.rc == 0 else res.rc

    fp = written[segv]["fingerprint"]
    assert pids(str(segv)) == [segv]
    assert pids(f"fingerprint={fp[:10]}") == [segv]
    assert pids("signal=SEGV") == [segv] and pids("signal=6") == [abort]
    assert pids(str(exe)) == [segv, abort] and pids(exe.name) == [segv, abort]
    assert pids(str(segv), str(abort)) == [segv, abort], "one field: any of them"
    assert pids(str(segv), "signal=ABRT") == 1, "two fields: all of them"
    assert pids("-r") == [abort, segv] and pids("-1") == [abort] and pids("-n", "1") == [abort]
    assert pids("--since", "1h ago") == [segv, abort]
    assert pids("--until", "2000-01-01") == 1

    res = cli(state, "show", str(segv))
    assert res.rc == 0, res
    assert f"PID: {segv} (" in res.stdout and "Signal: 11 (SIGSEGV)" in res.stdout, res.stdout
    assert f"Fingerprint: {fp}" in res.stdout and "boom" in res.stdout, res.stdout
    shown = json.loads(cli(state, "show", "--json", str(segv)).stdout)
    assert shown["report_id"] == written[segv]["report_id"]
    assert names(crashed_thread(shown)) == names(crashed_thread(written[segv]))

    res = cli(state, "show", "pid=1")
    assert res.rc == 1 and res.stderr.strip().count("\n") == 0, res
    assert "no stored report matches" in res.stderr


def test_snapshots_only_with_all(spawn, builder, tmp_path):
    target = spawn(builder.build("chain.c"), 2)
    assert cli(tmp_path, "attach", target.pid).rc == 0
    res = cli(tmp_path, "list")
    assert res.rc == 1 and "no stored report matches" in res.stderr, res
    res = cli(tmp_path, "list", "--all", str(target.pid))
    assert res.rc == 0 and "snapshot" in res.stdout.splitlines()[1], res.stdout
    shown = json.loads(cli(tmp_path, "show", "--all", "--json").stdout)
    assert shown["source"] == "attach" and shown["process"]["pid"] == target.pid


def test_symbolize_does_not_store(spawn, builder, tmp_path):
    target = spawn(builder.build("chain.c"), 2)
    res = cli(tmp_path, "attach", "--symbolize-budget", "0", target.pid)
    path = tmp_path / "r.json"
    path.write_text(res.stdout)
    assert cli(tmp_path, "symbolize", path).rc == 0
    rows = json.loads(cli(tmp_path, "list", "--all", "--json").stdout)
    assert [r["report_id"] for r in rows] == [res.report["report_id"]]


def store(tmp_path, **settings) -> Store:
    cfg = cfgmod.load(None, tuple(f"store.{k}={v!r}" if isinstance(v, str) else
                                  f"store.{k}={v}" for k, v in settings.items()), env={})
    return Store(str(tmp_path), cfg["store"])


def fake(i: int, t: float, size: int = 0, fingerprint: str = "f" * 32) -> dict:
    """A report; `size` characters of padding that does not compress
    (base64 of random bytes: ~3/4 of it stays)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))
    pad = base64.b64encode(random.Random(i).randbytes(size * 3 // 4)).decode()
    return {"report_id": f"id-{i}", "time": stamp, "source": "core", "fingerprint": fingerprint,
            "process": {"pid": 1000 + i, "exe": "/bin/x", "name": "x", "uid": 0, "gid": 0},
            "signal": {"number": 11, "name": "SIGSEGV"}, "threads": [], "pad": pad}


def stored(s: Store) -> list[str]:
    return [r["report_id"] for r in s.find([], snapshots=True)]


def test_retention_by_count_bytes_age_and_free_disk(tmp_path):
    now = time.time()
    s = store(tmp_path / "a", max_reports=3)
    for i in range(5):
        s.add(fake(i, now - 50 + i))
    assert stored(s) == ["id-2", "id-3", "id-4"]

    s = store(tmp_path / "b", max_bytes=17_000)  # what the disk holds: ~7,600 bytes each
    for i in range(5):
        s.add(fake(i, now - 50 + i, size=10_000))
    assert stored(s) == ["id-3", "id-4"]

    s = store(tmp_path / "c", max_age="1h")
    for i, age in enumerate([7200, 5000, 10]):
        s.add(fake(i, now - age))
    assert stored(s) == ["id-2"]

    s = store(tmp_path / "d", keep_free="1000000G")  # never enough free disk
    for i in range(3):
        s.add(fake(i, now - 50 + i))
    assert stored(s) == ["id-2"], "the newest report always stays"

    again = fake(2, now)
    again["threads"] = [{"tid": 1, "frames": []}]
    s.add(again)  # symbolized again: the same report, replaced
    assert stored(s) == ["id-2"] and s.report("id-2")["threads"] == again["threads"]


def test_reports_are_kept_compressed_and_old_text_rows_still_read(tmp_path):
    """A report is kept as zlib-compressed JSON, `bytes` its size on disk;
    one kept as JSON text by an earlier collector reads the same."""
    s = store(tmp_path)
    report = fake(1, time.time())
    report["threads"] = [{"tid": 1, "frames": [{"index": n, "function": "same"} for n in range(500)]}]
    text = s.add(report)
    db = sqlite3.connect(tmp_path / "reports.db")
    kept, size = db.execute("SELECT report, bytes FROM reports").fetchone()
    assert isinstance(kept, bytes) and size == len(kept) < len(text) / 10
    assert zlib.decompress(kept).decode() == text and s.report("id-1") == report
    with db:
        db.execute("UPDATE reports SET report = ?", (text,))
    assert s.report("id-1") == report
    with db:
        db.execute("UPDATE reports SET report = ?", (b"not zlib",))
    with pytest.raises(StoreError, match="damaged"):
        s.report("id-1")


WRITER = """
import json, sys
sys.path[:0] = [{repo!r}]
from collector import config
from collector.delivery.deliver import Delivery
cfg = config.load(None, ("collector.state_dir={state}", "spool.dir={state}/spool",
                         "storm.burst=10", "storm.per_minute=0.01"), env={{}})
Delivery(cfg).prepare(json.loads(sys.argv[1]))
"""


def test_50_parallel_writers(tmp_path):
    """A storm of handlers: every report stored or counted as suppressed,
    none lost, the database intact."""
    script = WRITER.format(repo=str(REPO), state=tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", script, json.dumps(fake(i, time.time()))],
                              stderr=subprocess.PIPE) for i in range(50)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    db = sqlite3.connect(tmp_path / "reports.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    kept = db.execute("SELECT count(*) FROM reports").fetchone()[0]
    suppressed = db.execute("SELECT count FROM suppressed").fetchone()[0]
    assert (kept, suppressed) == (10, 40), "burst 10 of one fingerprint, the rest counted"
    res = cli(tmp_path, "list", "--group", "--json")
    group, = json.loads(res.stdout)
    assert (group["count"], group["suppressed"]) == (50, 40), group
