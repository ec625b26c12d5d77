"""A failure in one stage after capture is an entry in the report's errors,
and the report is still delivered with what was reached: one thread's
unwind, redaction (never unredacted: what it could not redact is left
out), fingerprint, storm control, text rendering. Bad input is real where
it can be (a command line that is no list of strings, a damaged storm
state); a bug is injected by monkeypatching only where no input reaches it."""
from __future__ import annotations

import json
import uuid

from collector import collect, config
from collector.delivery.deliver import Delivery
from collector.delivery.sinks import stdout
from collector.targets.procfs import ThreadInfo
from unwinder.regs import RBP, RIP, RSP
from unwinder.space import FakeSpace, Mapping

STACK = 0x7FFF_0000_0000


def space() -> FakeSpace:
    maps = [Mapping(STACK - 0x1000, STACK, "rw-p", path="[stack]")]
    regs = {tid: {RIP: 0x1000 + tid, RSP: STACK - 0x100, RBP: 0} for tid in (1, 2)}
    return FakeSpace({STACK - 0x1000: bytes(0x1000)}, maps, regs)


def test_one_thread_whose_unwind_raises_keeps_its_registers(monkeypatch):
    real = collect.unwind

    def unwind(space, modules, regs, *args):
        if regs[RIP] == 0x1002:
            raise ZeroDivisionError("a bug in a strategy")
        return real(space, modules, regs, *args)

    monkeypatch.setattr(collect, "unwind", unwind)
    infos = [ThreadInfo(1, "main", "S"), ThreadInfo(2, "worker", "S")]
    threads, _, errors = collect.unwind_threads(space(), infos, 64)
    assert errors == ["unwinding thread 2 failed: ZeroDivisionError: a bug in a strategy"]
    ok, failed = threads
    assert ok["frames"][0]["method"] == "context" and "failed" not in ok["stop_reason"]
    assert failed["tid"] == 2 and failed["registers"]["rip"] == 0x1002
    assert [(f["pc"], f["sp"], f["method"]) for f in failed["frames"]] == \
        [(0x1002, STACK - 0x100, "context")]
    assert failed["stop_reason"] == "unwinding failed (see errors)"


def delivery(tmp_path, *settings) -> Delivery:
    p = tmp_path / "c.toml"
    p.write_text(f'[collector]\nstate_dir = "{tmp_path}/state"\n'
                 f'[spool]\ndir = "{tmp_path}/spool"\n'
                 f'[[sink]]\ntype = "file"\npath = "{tmp_path}/out.jsonl"\n')
    return Delivery(config.load(str(p), settings, env={}))


def report(**process) -> dict:
    frames = [{"index": 0, "pc": 0x401000, "sp": 0, "cfa": None, "module": "/bin/prog",
               "build_id": None, "rel_pc": 0x1000, "function": "f", "offset": 0,
               "method": "context"}]
    return {"report_id": str(uuid.uuid4()), "source": "core", "errors": [],
            "process": {"pid": 7, "exe": "/bin/prog", "cmdline": ["prog"], **process},
            "threads": [{"tid": 7, "frames": frames, "crashed": True}]}


def delivered(tmp_path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]


def test_redaction_that_fails_leaves_out_what_it_could_not_redact(tmp_path):
    """A command line with a non-string in it (a report read from a file)
    makes the masking raise: the report goes out without environment and
    command line, never with the password."""
    d = delivery(tmp_path, "redact.environment=['LANG']")
    d.deliver(report(cmdline=["prog", "--password=hunter2", 5],
                     environ={"LANG": "C", "DB_PASSWORD": "hunter2"}))
    (got,) = delivered(tmp_path)
    assert "hunter2" not in json.dumps(got)
    assert got["process"]["cmdline"] == [] and "environ" not in got["process"]
    assert got["process"]["pid"] == 7 and got["threads"][0]["frames"]
    assert got["errors"][0] == "redaction failed: TypeError"  # no message: it may quote data
    assert "left out" in got["errors"][1]


def test_fingerprint_that_fails_and_storm_state_damaged(tmp_path):
    """A frame whose module is a number (a report read from a file) breaks
    the fingerprint; a storm state with a number where a count should be
    breaks the token bucket. Both reports are delivered, saying so."""
    d = delivery(tmp_path)
    r = report()
    r["threads"][0]["frames"][0]["module"] = 5
    d.deliver(r)
    (tmp_path / "state" / "storm.json").write_text('{"global": {"tokens": "ten", "t": 0}}')
    d.deliver(report())
    first, second = delivered(tmp_path)
    assert "fingerprint" not in first
    assert first["errors"] == ["fingerprinting failed: TypeError: expected str, bytes or "
                               "os.PathLike object, not int"]
    assert len(second["fingerprint"]) == 32
    assert second["errors"][0].startswith("storm control failed: TypeError")
    (tmp_path / "state" / "storm.json").write_text('["not", "a", "state"]')
    d.deliver(report())  # a state of the wrong shape starts afresh
    assert delivered(tmp_path)[2]["errors"] == []


def test_text_that_cannot_be_rendered_goes_out_as_json(monkeypatch, capsys):
    def render(report, *style):
        raise KeyError("pid")

    monkeypatch.setattr(stdout, "render", render)
    r = report()
    stdout.StdoutSink({"name": "stdout", "format": "text"}).send([r])
    got = json.loads(capsys.readouterr().out)
    assert got["report_id"] == r["report_id"] and got["threads"] == r["threads"]
    assert got["errors"] == ["text rendering failed: KeyError: 'pid'"]
    assert r["errors"] == []  # the other sinks' copy is not changed
