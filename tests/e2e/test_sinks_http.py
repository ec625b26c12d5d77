"""The http sink against a local HTTP server in a thread (and
systemd-journal-remote for the journal-remote flavour): the pipeline down,
reports spooled, the pipeline up, `collector flush`: every report delivered
once, none lost, in order; retries on 503; TLS verified."""
from __future__ import annotations

import json

from .receivers import (STDOUT, config, free_port, http_server, journal_file_entries,
                        journal_remote, self_signed)


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_flush_http_down_then_up_exactly_once_in_order(tmp_path, builder, spawn, collector):
    port = free_port()  # nothing listens there yet: connection refused
    cfg = config(tmp_path, STDOUT, {"type": "file", "path": f"{tmp_path}/reports.jsonl"},
                 {"type": "http", "url": f"http://127.0.0.1:{port}/ingest?source=collector",
                  "retries": 1, "backoff": 0.05, "timeout": 2, "batch_reports": 2})
    t = spawn(builder.build("chain.c"), "1")
    ids = []
    for _ in range(3):
        r = collector("--config", cfg, "attach", t.pid)
        assert r.rc == 0, str(r)  # a failed sink does not fail the command
        ids.append(r.report["report_id"])
    spooled = sorted((tmp_path / "spool").glob("0*.json"))
    assert len(spooled) == 3
    assert [json.loads(p.read_text().splitlines()[1])["report_id"] for p in spooled] == ids
    assert [r["report_id"] for r in lines(tmp_path / "reports.jsonl")] == ids  # file got them
    with http_server(port) as server:
        r = collector("--config", cfg, "flush")
        assert r.rc == 0 and "3 of 3" in r.stdout, str(r)
        assert [x["report_id"] for x in server.reports()] == ids
        assert [len(b.splitlines()) for b in server.bodies()] == [2, 1]  # batched
        req = server.requests[0]
        assert req["path"] == "/ingest?source=collector"
        assert req["headers"]["Content-Type"] == "application/x-ndjson"
        r = collector("--config", cfg, "attach", t.pid)  # up: straight through
        assert r.rc == 0, str(r)
        ids.append(r.report["report_id"])
        r = collector("--config", cfg, "flush")
        assert r.rc == 0 and "0 of 0" in r.stdout, str(r)
        assert [x["report_id"] for x in server.reports()] == ids  # each exactly once
    assert [r["report_id"] for r in lines(tmp_path / "reports.jsonl")] == ids
    assert not list((tmp_path / "spool").glob("0*.json"))


def test_flush_incomplete_exit_code(tmp_path):
    cfg = config(tmp_path, {"type": "http", "url": f"http://127.0.0.1:{free_port()}/",
                            "retries": 0})
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    (spool / "00000000000000000001-x.json").write_text('["http"]\n{"report_id": "x"}\n')
    from conftest import collector_argv, run_command
    r = run_command(collector_argv("--config", cfg, "flush"))
    assert r.rc == 14 and "0 of 1" in r.stderr and "http 1" in r.stderr, str(r)
    assert r.stderr.count("collector:") == 1


def test_sinks_http_retries_token_and_tls(tmp_path, builder, spawn, collector):
    cert, key = self_signed(tmp_path)
    (tmp_path / "token").write_text("s3cret-bearer\n")
    t = spawn(builder.build("chain.c"))
    with http_server(tls=(cert, key)) as server:
        url = f"https://127.0.0.1:{server.server_address[1]}/bulk"
        sink = {"type": "http", "url": url, "retries": 3, "backoff": 0.05,
                "token_file": f"{tmp_path}/token", "headers": {"X-Scope-OrgID": "crashes"}}
        # an unknown CA: refused, spooled, exit 0
        r = collector("--config", config(tmp_path, STDOUT, sink), "attach", t.pid)
        assert r.rc == 0 and "CERTIFICATE_VERIFY_FAILED" in r.stderr, str(r)
        assert server.requests == []
        # our CA, and two 503s before success: retried, then delivered with the spooled one
        server.fail_next = 2
        trusted = config(tmp_path, {**sink, "ca_file": str(cert)})
        r2 = collector("--config", trusted, "flush")
        assert r2.rc == 0, str(r2)
        assert [q["status"] for q in server.requests] == [503, 503, 200]
        assert [x["report_id"] for x in server.reports()] == [r.report["report_id"]]
        h = server.requests[-1]["headers"]
        assert h["Authorization"] == "Bearer s3cret-bearer" and h["X-Scope-OrgID"] == "crashes"


def test_sinks_http_journal_remote(tmp_path, builder, spawn, collector):
    t = spawn(builder.build("chain.c"), "1")
    with journal_remote(tmp_path) as (port, out):
        cfg = config(tmp_path, STDOUT, {"type": "http", "flavour": "journal-remote",
                                        "url": f"http://127.0.0.1:{port}/upload", "retries": 0})
        ids = []
        for _ in range(2):
            r = collector("--config", cfg, "attach", t.pid)
            assert r.rc == 0 and "spooled" not in r.stderr, str(r)
            ids.append(r.report["report_id"])
    entries = [e for e in journal_file_entries(out) if e.get("SYSLOG_IDENTIFIER") == "collector"]
    assert [e["COLLECTOR_REPORT_ID"] for e in entries] == ids
    for e in entries:
        report = json.loads(e["COLLECTOR_REPORT"])
        assert report["report_id"] == e["COLLECTOR_REPORT_ID"]
        assert e["COLLECTOR_FINGERPRINT"] == report["fingerprint"]
        assert e["COLLECTOR_PID"] == str(t.pid)
        assert e["MESSAGE"].startswith(f"{report['process']['exe']} (pid {t.pid}) backtrace")


def test_sinks_unspoolable_report_is_exit_13(tmp_path, builder, spawn, collector):
    """The pipeline is down and the spool cannot be written: the report is
    still printed by the sinks that work, and the exit code says it is lost
    for the others."""
    t = spawn(builder.build("chain.c"))
    cfg = config(tmp_path, STDOUT, {"type": "http", "url": f"http://127.0.0.1:{free_port()}/",
                                    "retries": 0})
    r = collector("--config", cfg, "--set", 'spool.dir="/proc/no-spool-here"', "attach", t.pid)
    assert r.rc == 13, str(r)
    assert r.stdout.count("\n") == 1 and json.loads(r.stdout)["process"]["pid"] == t.pid
    assert "reached no sink of http and could not be spooled in /proc/no-spool-here" in r.stderr
