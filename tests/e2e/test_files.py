"""Where the collector writes, under hostile or full conditions: the spool
on a real full disk (a small tmpfs this test mounts, and unmounts on every
exit path), file sink paths and spool directories pre-created as symlinks,
directories others may write, hard links and FIFOs where a log file should
be. Nothing is followed, nothing is left behind, no report is lost."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid

import pytest

from collector import config as cfgmod
from collector.delivery.deliver import Delivery
from collector.delivery.sinks import SinkError
from collector.delivery.sinks.file import FileSink
from collector.errors import NotDelivered

from .helpers import collector_argv, run_command
from .receivers import config, free_port, http_server


@contextlib.contextmanager
def small_tmpfs(path, size: str = "64k"):
    """A tmpfs of `size` at `path` (16 pages for 64k), unmounted afterwards."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                        str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def rep(pad: int = 3000) -> dict:
    return {"report_id": str(uuid.uuid4()), "source": "attach", "threads": [],
            "process": {"pid": 1, "exe": None, "cmdline": []}, "pad": "x" * pad}


def leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(".tmp-"))


def ids(path) -> list[str]:
    return [json.loads(x)["report_id"] for x in path.read_text().splitlines()] \
        if path.exists() else []


def test_spool_on_a_full_disk_then_flush_delivers_each_once(tmp_path):
    """Both sinks down (the http receiver not started, the file sink's path a
    symlink, which is refused): reports are spooled until the tmpfs is full,
    then NotDelivered. Flush with the receiver back delivers every spooled
    report to it once (the list of sinks still owed is rewritten in place: no
    room for a copy), and exits 14 for the file sink; once the symlink is gone
    flush exits 0. No .tmp-* file is ever left, the symlink target is never
    touched."""
    port = free_port()
    logs, target = tmp_path / "logs", tmp_path / "target"
    logs.mkdir()
    target.write_text("not a log\n")
    target.chmod(0o644)
    (logs / "r.jsonl").symlink_to(target)
    cfg = config(tmp_path, {"type": "file", "name": "file", "path": str(logs / "r.jsonl")},
                 {"type": "http", "name": "http", "url": f"http://127.0.0.1:{port}/",
                  "retries": 0, "timeout": 2})
    with small_tmpfs(tmp_path / "spool"):
        d = Delivery(cfgmod.load(str(cfg), env={}))
        sent = []
        for _ in range(100):
            r = rep()
            try:
                d.deliver(dict(r))
            except NotDelivered as e:
                assert "could not be spooled" in str(e)
                break
            sent.append(r["report_id"])
        else:
            pytest.fail("the spool never filled the 64k tmpfs")
        st = os.statvfs(tmp_path / "spool")
        print(f"spooled {len(sent)} reports; {st.f_bavail} blocks free")
        assert st.f_bavail == 0 and len(sent) >= 5
        assert leftovers(tmp_path / "spool") == []
        spooled = sorted((tmp_path / "spool").glob("0*.json"))
        assert [json.loads(p.read_text().splitlines()[1])["report_id"] for p in spooled] == sent
        assert {p.read_text().splitlines()[0] for p in spooled} == {'["file", "http"]'}

        with http_server(port) as server:
            r = run_command(collector_argv("--config", cfg, "flush"))
            assert r.rc == 14, str(r)
            assert "still owed: file" in r.stderr and "symbolic link" in r.stderr, str(r)
            assert [x["report_id"] for x in server.reports()] == sent
            assert leftovers(tmp_path / "spool") == []
            assert [json.loads(p.read_text().splitlines()[0]) for p in spooled] == \
                [["file"]] * len(sent)
            r = run_command(collector_argv("--config", cfg, "flush"))
            assert r.rc == 14, str(r)
            assert len(server.reports()) == len(sent)  # not a second copy
        assert target.read_text() == "not a log\n" and target.stat().st_mode & 0o777 == 0o644
        (logs / "r.jsonl").unlink()
        r = run_command(collector_argv("--config", cfg, "flush"))
        assert r.rc == 0, str(r)
        assert f"{len(sent)} of {len(sent)} spooled reports delivered" in r.stdout
        assert ids(logs / "r.jsonl") == sent
        assert leftovers(tmp_path / "spool") == []
        assert not list((tmp_path / "spool").glob("0*.json"))


def file_sink(path) -> FileSink:
    return FileSink({"name": "file", "path": str(path), "max_bytes": 1 << 20, "keep": 2,
                     "mode": 0o600})


def test_file_sink_refuses_what_is_no_file_of_its_own(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    target = tmp_path / "target"
    target.write_text("keep\n")
    target.chmod(0o644)
    cases = {"link": lambda p: p.symlink_to(target),
             "dangling": lambda p: p.symlink_to(tmp_path / "nowhere"),
             "hardlink": lambda p: os.link(target, p),
             "fifo": lambda p: os.mkfifo(p),
             "dir": lambda p: p.mkdir()}
    for name, make in cases.items():
        make(logs / name)
        with pytest.raises(SinkError) as e:
            file_sink(logs / name).send([rep(10)])
        print(f"{name}: {e.value}")
        assert str(logs / name) in str(e.value)
    assert "symbolic link" in str(pytest.raises(SinkError, file_sink(logs / "link").send,
                                                [rep(10)]).value)
    assert target.read_text() == "keep\n" and target.stat().st_mode & 0o777 == 0o644
    assert not (tmp_path / "nowhere").exists()
    assert target.stat().st_nlink == 2  # the hard link stayed a hard link, untouched


def test_file_sink_directory_rules(tmp_path):
    """Root's or ours, not a symlink, not writable by others unless sticky;
    writable by its group is a shared log directory (Debian's /var/log)."""
    ok = {"plain": 0o755, "group": 0o775, "sticky": 0o1777}
    for name, mode in ok.items():
        d = tmp_path / name
        d.mkdir()
        d.chmod(mode)
        file_sink(d / "r.jsonl").send([rep(10)])
        assert len(ids(d / "r.jsonl")) == 1, name
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(SinkError, match="writable by others"):
        file_sink(open_dir / "r.jsonl").send([rep(10)])
    (tmp_path / "via").symlink_to(tmp_path / "plain")
    with pytest.raises(SinkError, match="symbolic link"):
        file_sink(tmp_path / "via" / "r.jsonl").send([rep(10)])
    assert not list(open_dir.iterdir())
    assert len(ids(tmp_path / "plain" / "r.jsonl")) == 1


def test_spool_directory_that_is_a_symlink_is_refused(tmp_path):
    """Nothing is written where the link points; a report no sink took is
    NotDelivered (exit 13), and flush says why (exit 14)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "spool").symlink_to(elsewhere)
    cfg = config(tmp_path, {"type": "file", "name": "file", "path": "/dev/null"})
    d = Delivery(cfgmod.load(str(cfg), env={}))
    with pytest.raises(NotDelivered, match="could not be spooled"):
        d.deliver(rep(10))  # /dev/null is no regular file: the sink fails
    assert list(elsewhere.iterdir()) == []
    r = run_command(collector_argv("--config", cfg, "flush"))
    assert r.rc == 14 and "symbolic link" in r.stderr, str(r)
    assert list(elsewhere.iterdir()) == []
