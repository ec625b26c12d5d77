"""The otlp sink against a loopback OTLP/HTTP receiver that decodes what
it gets with opentelemetry-proto's generated classes (strict JSON, binary
protobuf): every attribute of real crash and snapshot reports checked
against the report itself; 429 with Retry-After retried after that long; a
400 not retried and set aside; the receiver down, the reports spooled, then
`collector flush` delivers them in order."""
from __future__ import annotations

import datetime
import json
import os
import pwd
import socket

from conftest import collector_argv, collector_env, run_command

from .receivers import STDOUT, config, free_port, otlp_receiver

SEVERITY = {"FATAL": 21, "INFO": 9}


def otlp(endpoint: str, **kw) -> dict:
    return {"type": "otlp", "endpoint": endpoint, "retries": 0, "timeout": 5, **kw}


def run(cfg, *argv, env=None):
    """`collector run`: (result, the report as stdout printed it)."""
    r = run_command(collector_argv("--config", cfg, "run", "--", *map(str, argv)), env=env)
    return r, json.loads(r.stdout.strip().splitlines()[-1])


def crashed(report: dict) -> dict:
    return next(t for t in report["threads"] if t.get("crashed"))


def check_record(resource: dict, rec, report: dict) -> dict:
    """Everything the record says, against the report it came from; returns
    its attributes."""
    a = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in rec.attributes}
    assert len(a) == len(rec.attributes), "an attribute key twice"
    p = report["process"]
    assert report["host"]["hostname"] == socket.gethostname()
    assert resource == {"host.name": socket.gethostname(), "os.type": "linux",
                        "host.id": open("/etc/machine-id").read().strip(),
                        "service.name": os.path.basename(p["exe"])}
    assert json.loads(a.pop("collector.report")) == report
    assert a.pop("collector.report_id") == report["report_id"]
    assert a.pop("collector.fingerprint") == report["fingerprint"]
    assert a.pop("process.pid") == p["pid"]
    assert a.pop("process.executable.path") == p["exe"]
    assert a.pop("process.executable.name") == os.path.basename(p["exe"])
    assert a.pop("process.command_line") == " ".join(p["cmdline"])
    assert a.pop("process.owner") == pwd.getpwuid(p["uid"]).pw_name
    assert rec.event_name == "process.crash"
    from collector.text import render  # the body is the text backtrace, exactly
    assert rec.body.string_value == render(report)
    assert rec.time_unix_nano == rec.observed_time_unix_nano > 0
    when = datetime.datetime.fromisoformat(report["time"].replace("Z", "+00:00"))
    assert abs(rec.time_unix_nano / 1e9 - when.timestamp()) < 2e-6
    crash = "signal" in report
    assert (rec.severity_text, rec.severity_number) == \
        (("FATAL", 21) if crash else ("INFO", 9))
    return a


def test_otlp_json_crash_every_attribute(tmp_path, builder):
    exe = builder.build("crash.c", extra=("-g",))  # debug lines: code.file.path, .line.number
    with otlp_receiver() as rx:
        url = f"http://127.0.0.1:{rx.server_address[1]}"  # no path: /v1/logs
        cfg = config(tmp_path, STDOUT, otlp(url, headers={"X-Tenant": "crashes"}))
        r, report = run(cfg, exe, "abort")
        assert r.rc == 134 and "sink failed" not in r.stderr, str(r)
        (req,) = rx.requests
        assert req["path"] == "/v1/logs" and req["status"] == 200
        assert req["headers"]["Content-Type"] == "application/json"
        assert req["headers"]["X-Tenant"] == "crashes"
        body = json.loads(req["body"])  # OTLP/JSON: int64 as strings, enums as numbers
        raw = body["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
        assert isinstance(raw["timeUnixNano"], str) and raw["severityNumber"] == 21
        assert {"key": "process.pid", "value": {"intValue": str(report["process"]["pid"])}} \
            in raw["attributes"]
        ((resource, rec),) = rx.records()
    (export,) = rx.exports()
    assert export.resource_logs[0].scope_logs[0].scope.name == "collector"
    a = check_record(resource, rec, report)
    thread = crashed(report)
    assert a.pop("thread.id") == thread["tid"] and a.pop("thread.name") == thread["name"]
    assert a.pop("exception.type") == "SIGABRT"
    assert a.pop("exception.message") == \
        f"{report['process']['exe']} (pid {report['process']['pid']}) crashed with SIGABRT " \
        f"at inner ({exe.name})"
    stack = a.pop("exception.stacktrace")
    assert "(crashed):" in stack and " inner+" in stack and " main+" in stack
    # the crashing frame is inner's call of abort(), past the raise/abort machinery
    assert a.pop("code.function.name") == "inner"
    path, line = a.pop("code.file.path"), a.pop("code.line.number")
    assert path.endswith("tests/fixtures/crash.c")
    assert "abort()" in open(path).read().splitlines()[line - 1]
    assert a == {}, f"unexpected attributes {sorted(a)}"


def test_otlp_protobuf_thread_crash_and_snapshot(tmp_path, builder, spawn, collector):
    with otlp_receiver() as rx:
        url = f"http://127.0.0.1:{rx.server_address[1]}/otlp/v1/logs"
        cfg = config(tmp_path, STDOUT, otlp(url, protocol="http/protobuf"))
        r, crash = run(cfg, builder.build("crash.c"), "thread")
        assert r.rc == 139 and "sink failed" not in r.stderr, str(r)
        t = spawn(builder.build("chain.c"))
        snap = collector("--config", cfg, "attach", t.pid)
        assert snap.rc == 0 and "sink failed" not in snap.stderr, str(snap)
        assert [q["path"] for q in rx.requests] == ["/otlp/v1/logs"] * 2
        assert {q["headers"]["Content-Type"] for q in rx.requests} == {"application/x-protobuf"}
        (c_res, c_rec), (s_res, s_rec) = rx.records()
    a = check_record(c_res, c_rec, crash)
    thread = crashed(crash)
    assert thread["name"] == "crasher" and thread["tid"] != crash["process"]["pid"]
    assert a.pop("thread.id") == thread["tid"] and a.pop("thread.name") == "crasher"
    assert a.pop("exception.type") == "SIGSEGV"
    assert a.pop("exception.message").endswith("crashed with SIGSEGV at 0x0 (?)")
    assert "TID %d \"crasher\" (crashed):" % thread["tid"] in a.pop("exception.stacktrace")
    assert a == {}, f"a call through NULL has no function, file or line: {sorted(a)}"

    report = snap.report
    a = check_record(s_res, s_rec, report)
    assert a.pop("thread.id") == report["threads"][0]["tid"] == t.pid  # no crash: the main thread
    assert a.pop("thread.name") == report["threads"][0]["name"]
    top = report["threads"][0]["frames"][0]  # in a syscall wrapper: no machinery to skip
    assert top["function"] and a.pop("code.function.name") == top["function"]
    assert (a.pop("code.file.path", None), a.pop("code.line.number", None)) == \
        (top.get("file"), top.get("line"))
    assert a == {}, f"a snapshot has no exception: {sorted(a)}"


def test_otlp_retry_after_429_then_200_and_400_set_aside(tmp_path, builder, spawn, collector):
    t = spawn(builder.build("chain.c"))
    with otlp_receiver() as rx:
        url = f"http://127.0.0.1:{rx.server_address[1]}/v1/logs"
        cfg = config(tmp_path, STDOUT, otlp(url, retries=3, backoff=0.01))
        rx.script = [(429, {"Retry-After": "1"})]
        r = collector("--config", cfg, "attach", t.pid)
        assert r.rc == 0 and "sink failed" not in r.stderr, str(r)
        assert [q["status"] for q in rx.requests] == [429, 200]
        waited = rx.requests[1]["time"] - rx.requests[0]["time"]
        assert 0.9 < waited < 5, f"Retry-After 1 s, backoff 0.01 s: waited {waited:.2f} s"
        assert rx.requests[0]["body"] == rx.requests[1]["body"]

        # 400: bad data for good; OTLP forbids a retry, and queueing it would
        # block every later report behind it: set aside in the spool instead
        del rx.requests[:]
        rx.script = [(400, {})]
        r = collector("--config", cfg, "attach", t.pid)
        assert r.rc == 0 and "HTTP 400" in r.stderr and "set aside" in r.stderr, str(r)
        assert [q["status"] for q in rx.requests] == [400]
        spool = tmp_path / "spool"
        assert not list(spool.glob("0*.json"))
        (aside,) = spool.glob(".rejected-*.json")
        assert aside.name.endswith(f"-{r.report['report_id']}.json")
        pending, kept = aside.read_text().splitlines()
        assert json.loads(pending) == ["otlp"] and json.loads(kept) == r.report

        # nothing behind it is held up, and renaming it back queues it again
        r2 = collector("--config", cfg, "attach", t.pid)
        assert r2.rc == 0 and [q["status"] for q in rx.requests] == [400, 200], str(r2)
        aside.rename(spool / aside.name[len(".rejected-"):])
        f = collector("--config", cfg, "flush")
        assert f.rc == 0 and "1 of 1" in f.stdout, str(f)
        got = [next(kv.value.string_value for kv in rec.attributes
                    if kv.key == "collector.report_id") for _, rec in rx.records()]
        assert got[-2:] == [r2.report["report_id"], r.report["report_id"]]

        # a Retry-After longer than post.MAX_WAIT is the spool's to wait out
        rx.script = [(503, {"Retry-After": "3600"})]
        r3 = collector("--config", cfg, "attach", t.pid)
        assert r3.rc == 0 and r3.wall_s < 20 and "Retry-After 3600 s" in r3.stderr, str(r3)
        assert len(list(spool.glob("0*.json"))) == 1


def test_otlp_receiver_down_spooled_then_flush(tmp_path, builder, spawn, collector):
    port = free_port()  # nothing listens yet: refused
    cfg = config(tmp_path, STDOUT, otlp(f"http://127.0.0.1:{port}/v1/logs",
                                        protocol="http/protobuf", retries=1, backoff=0.05))
    t = spawn(builder.build("chain.c"))
    reports = []
    for _ in range(3):
        r = collector("--config", cfg, "attach", t.pid)
        assert r.rc == 0 and "report spooled" in r.stderr, str(r)
        reports.append(r.report)
    assert len(list((tmp_path / "spool").glob("0*.json"))) == 3
    with otlp_receiver(port) as rx:
        f = collector("--config", cfg, "flush")
        assert f.rc == 0 and "3 of 3" in f.stdout, str(f)
        (export,) = rx.exports()  # one batch, one resource (the same process)
        assert len(export.resource_logs) == 1
        records = rx.records()
    assert len(records) == 3
    for (res, rec), report in zip(records, reports, strict=True):
        check_record(res, rec, report)
    assert not list((tmp_path / "spool").glob("0*.json"))


def test_otlp_protobuf_without_the_extra_is_spooled_and_says_so(tmp_path, builder, spawn,
                                                                  collector):
    """opentelemetry-proto absent (an `opentelemetry` package without proto
    shadows it): the sink error names the extra; the report waits in the spool."""
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    env = collector_env()
    env["PYTHONPATH"] = f"{shadow.parent}{os.pathsep}{env['PYTHONPATH']}"
    t = spawn(builder.build("chain.c"))
    cfg = config(tmp_path, STDOUT, otlp(f"http://127.0.0.1:{free_port()}/v1/logs",
                                        protocol="http/protobuf"))
    r = run_command(collector_argv("--config", cfg, "attach", t.pid), env=env)
    assert r.rc == 0 and "report spooled" in r.stderr, str(r)
    assert "needs the opentelemetry-proto package" in r.stderr
    assert "collector[otlp]" in r.stderr
    assert len(list((tmp_path / "spool").glob("0*.json"))) == 1
