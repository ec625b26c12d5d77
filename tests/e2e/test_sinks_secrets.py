"""A secret in the target's environment or on its command line never
appears in what any sink receives (stdout, file, journald, syslog, http,
journal-remote) nor in the spool or the collector's diagnostics, even with
every variable name allowed; allowed ordinary variables do appear."""
from __future__ import annotations

import secrets
import subprocess

from .receivers import (STDOUT, config, free_port, http_server, journal_file_entries,
                        journal_remote, journald, rsyslog)


def test_sinks_secret_never_in_any_output(tmp_path, builder, spawn, collector, monkeypatch):
    secret = {name: f"S3CR3T-{secrets.token_hex(8)}" for name in
              ("API_TOKEN", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY", "GH_AUTH", "SVC_CREDENTIAL")}
    for name, value in secret.items():
        monkeypatch.setenv(name, value)
    visible = f"visible-{secrets.token_hex(4)}"
    monkeypatch.setenv("COLLECTOR_TEST_VISIBLE", visible)
    cmd_secret = f"S3CR3T-{secrets.token_hex(8)}"
    t = spawn(builder.build("chain.c"), "1", f"--password={cmd_secret}")
    monkeypatch.delenv("API_TOKEN")  # the collector's own environment is not the target's
    every = [*secret.values(), cmd_secret]
    with rsyslog(tmp_path) as rs, journald() as ns, http_server() as web, \
            journal_remote(tmp_path) as (jr_port, jr_out):
        cfg = config(
            tmp_path, STDOUT, {"type": "file", "path": f"{tmp_path}/reports.jsonl"},
            {"type": "journald", "socket": ns.socket},
            {"type": "syslog", "address": f"tcp://127.0.0.1:{rs.tcp}", "max_message": "1M"},
            {"type": "http", "url": f"http://127.0.0.1:{web.server_address[1]}/"},
            {"type": "http", "name": "journal-remote", "flavour": "journal-remote",
             "url": f"http://127.0.0.1:{jr_port}/upload"},
            {"type": "http", "name": "down", "url": f"http://127.0.0.1:{free_port()}/",
             "retries": 0},
            extra='[redact]\nenvironment = ["*"]')
        r = collector("--config", cfg, "--log-level", "debug", "attach", t.pid)
        assert r.rc == 0, str(r)
        env = r.report["process"]["environ"]
        assert env["COLLECTOR_TEST_VISIBLE"] == visible and not set(secret) & set(env)
        assert "--password=<redacted>" in r.report["process"]["cmdline"]
        outputs = {"stdout": r.stdout, "stderr": r.stderr,
                   "file": (tmp_path / "reports.jsonl").read_text(),
                   "syslog": "\n".join(m["msg"] + m["sd"] for m in rs.wait_lines(1)),
                   "http": b"".join(web.bodies()).decode(),
                   "journald": subprocess.run(
                       ["journalctl", f"--namespace={ns.name}", "-o", "export", "--all"],
                       capture_output=True, timeout=30).stdout.decode(errors="replace"),
                   "spool": "".join(p.read_text() for p in (tmp_path / "spool").glob("0*.json"))}
        assert len(ns.wait_entries(1, "SYSLOG_IDENTIFIER=collector")) == 1
    outputs["journal-remote"] = str(journal_file_entries(jr_out))
    for where, text in outputs.items():
        if where != "stderr":
            assert r.report["report_id"] in text, f"{where} did not get the report"
        for s in every:
            assert s not in text, f"a secret reached {where}"
    with open(f"/proc/{t.pid}/environ", "rb") as f:  # the secrets were really there
        environ = f.read()
    assert all(v.encode() in environ for v in secret.values())
