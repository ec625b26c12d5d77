"""The journald sink against a real systemd-journald (not PID 1's: one the
test starts in its own journal namespace), read back with journalctl: a
small report as one datagram, a large one as a sealed memfd."""
from __future__ import annotations

import json
import os

from .receivers import STDOUT, config, journald

DATAGRAM_MAX = 212992  # net.core.wmem_default here: larger ones must go as a memfd


def test_sinks_journald_native_protocol(tmp_path, builder, spawn, collector):
    small = spawn(builder.build("chain.c"), "2")
    big = spawn(builder.build("recurse.c"), "3000")
    with journald() as ns:
        cfg = config(tmp_path, STDOUT, {"type": "journald", "socket": ns.socket})
        reports = []
        for t, extra in ((small, ()), (big, ("--max-frames", "4000"))):
            r = collector("--config", cfg, "attach", *extra, t.pid)
            assert r.rc == 0 and "spooled" not in r.stderr, str(r)
            reports.append(r.report)
        entries = ns.wait_entries(2, "SYSLOG_IDENTIFIER=collector")
    sizes = [len(json.dumps(r, separators=(",", ":"))) for r in reports]
    assert sizes[0] < DATAGRAM_MAX < sizes[1], sizes
    assert len(entries) == 2
    for report, e in zip(reports, entries, strict=True):
        p = report["process"]
        assert json.loads(e["COLLECTOR_REPORT"]) == report
        assert e["COLLECTOR_REPORT_ID"] == report["report_id"]
        assert e["COLLECTOR_FINGERPRINT"] == report["fingerprint"]
        assert e["COLLECTOR_PID"] == str(p["pid"]) and e["COLLECTOR_EXE"] == p["exe"]
        assert e["COLLECTOR_SOURCE"] == "attach" and e["PRIORITY"] == "5"
        assert e["MESSAGE"].startswith(f"{p['exe']} (pid {p['pid']}) backtrace at ")
        assert "\n" not in e["MESSAGE"]
        assert e["_TRANSPORT"] == "journal" and e["_PID"] != str(p["pid"])
        assert e["MESSAGE_ID"] == "240e15496e22413d9aad847ae5229b41"
    assert os.path.basename(reports[1]["process"]["exe"]) in entries[1]["MESSAGE"]
