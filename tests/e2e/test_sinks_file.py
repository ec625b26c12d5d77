"""The file sink: concurrent writers never interleave (reports far larger
than PIPE_BUF), size-based rotation loses nothing, files are never
world-readable whatever the umask; a sink that fails spools the report and
`collector flush` delivers it later, once per sink."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid

import pytest
from conftest import REPO

from collector import config as cfgmod
from collector.delivery.deliver import Delivery
from collector.errors import ConfigError

from .receivers import config

WRITER = """
import sys, uuid
sys.path.insert(0, {repo!r})
from collector.delivery.sinks.file import FileSink
sink = FileSink({settings!r})
for i in range({n}):
    sink.send([{{"report_id": str(uuid.uuid4()), "writer": {w}, "i": i, "pad": "x" * {pad}}}])
"""


def read_all(path) -> list[dict]:
    """Every line of PATH and its rotations, oldest first."""
    out = []
    for p in [path.with_name(f"{path.name}.{i}") for i in range(9, 0, -1)] + [path]:
        if p.exists():
            out += [json.loads(x) for x in p.read_bytes().split(b"\n") if x]
    return out


def test_sinks_file_concurrent_writers_and_rotation(tmp_path):
    path = tmp_path / "logs" / "reports.jsonl"
    settings = {"name": "file", "path": str(path), "max_bytes": 2 << 20, "keep": 9,
                "mode": 0o640}
    writers, n, pad = 6, 12, 100_000  # 100 kB a report: 25 times PIPE_BUF
    procs = [subprocess.Popen([sys.executable, "-c", WRITER.format(
        repo=str(REPO), settings=settings, n=n, w=w, pad=pad)], stderr=subprocess.PIPE,
        preexec_fn=lambda: os.umask(0o077)) for w in range(writers)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    got = read_all(path)  # json.loads fails on any interleaved or torn line
    assert sorted((r["writer"], r["i"]) for r in got) == \
        [(w, i) for w in range(writers) for i in range(n)]
    for w in range(writers):  # each writer's reports in its order, across rotations
        assert [r["i"] for r in got if r["writer"] == w] == list(range(n))
    files = sorted(p for p in path.parent.iterdir())
    assert len(files) >= 3, files  # 7.2 MB in 2 MB files: rotated
    for p in files:
        assert p.stat().st_size <= 2 << 20
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p  # not the umask's 0600, not 0644


def test_sinks_file_never_world_readable_rejected(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(f'[[sink]]\ntype = "file"\npath = "{tmp_path}/r"\nmode = 0o644\n')
    with pytest.raises(ConfigError, match=r"c.toml:4: sink\[0\].mode"):
        cfgmod.load(str(p), env={})


def test_flush_disk_full_then_flush_once_per_sink(tmp_path):
    """/dev/full is no regular file, so the sink refuses it (a real full
    disk: test_files.py): the report is spooled for that sink only (the
    spool holds 2: the oldest goes, and the next report says so); once the sink is pointed at a real file, flush delivers what the
    spool kept there once, and the healthy sink never gets a second copy."""
    def delivery(archive: str) -> Delivery:
        cfg = config(tmp_path, {"type": "file", "name": "main", "path": f"{tmp_path}/main.jsonl"},
                     {"type": "file", "name": "archive", "path": archive})
        return Delivery(cfgmod.load(str(cfg), ("spool.max_reports=2",), env={}))

    reports = [{"report_id": str(uuid.uuid4()), "source": "core", "process": {"cmdline": []},
                "threads": []} for _ in range(4)]
    full = delivery("/dev/full")
    for r in reports:
        full.deliver(dict(r))
    spooled = sorted((tmp_path / "spool").glob("0*.json"))
    assert [json.loads(p.read_text().splitlines()[0]) for p in spooled] == [["archive"]] * 2
    main = read_all(tmp_path / "main.jsonl")
    ids = [r["report_id"] for r in reports]
    assert [r["report_id"] for r in main] == ids
    assert [r.get("spool_dropped") for r in main] == [None, None, None, 1]
    ok = delivery(str(tmp_path / "archive.jsonl"))
    assert ok.flush() == "2 of 2 spooled reports delivered"
    assert ok.flush() == "0 of 0 spooled reports delivered"
    assert [r["report_id"] for r in read_all(tmp_path / "archive.jsonl")] == ids[2:]
    assert [r["report_id"] for r in read_all(tmp_path / "main.jsonl")] == ids
