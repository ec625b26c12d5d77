"""The syslog sink against a real rsyslogd started by the test: RFC 5424
over UDP, TCP (octet-counting) and a unix datagram socket, parsed by
rsyslog's own RFC 5424 parser and written to a file the test reads."""
from __future__ import annotations

import json

from .receivers import STDOUT, config, rsyslog

DAEMON_NOTICE = 3 * 8 + 5


def test_sinks_syslog_udp_tcp_unix(tmp_path, builder, spawn, collector):
    t = spawn(builder.build("chain.c"), "3")
    with rsyslog(tmp_path) as rs:
        udp, tcp = f"udp://127.0.0.1:{rs.udp}", f"tcp://127.0.0.1:{rs.tcp}"
        cfg = config(tmp_path, STDOUT,
                     {"type": "syslog", "name": "udp", "address": udp},
                     {"type": "syslog", "name": "tcp", "address": tcp, "max_message": "512K"},
                     {"type": "syslog", "name": "unix", "address": f"unix:{rs.socket}"},
                     {"type": "syslog", "name": "small", "address": udp, "max_message": 6000})
        r = collector("--config", cfg, "attach", t.pid)
        assert r.rc == 0, str(r)
        report = r.report
        got = rs.wait_lines(4)
    by_input = {}
    for m in got:
        by_input.setdefault(m["input"], []).append(m)
    assert sorted(len(v) for v in by_input.values()) == [1, 1, 2], got
    for m in got:
        assert (m["version"], m["pri"], m["app"], m["msgid"]) == \
            ("1", str(DAEMON_NOTICE), "collector", "attach"), m
        assert m["sd"].startswith("[crash@32473 ")
        assert f'fingerprint="{report["fingerprint"]}"' in m["sd"]
        assert f'report_id="{report["report_id"]}"' in m["sd"]
        assert f'pid="{t.pid}"' in m["sd"]
        sent = json.loads(m["msg"])
        assert sent["report_id"] == report["report_id"]
        if "truncated" in sent:  # the 6000-byte sink
            assert len(m["msg"]) <= 6000 and sent["truncated"][0] == "modules", sent["truncated"]
            assert len(sent["threads"]) == 1 and sent["threads"][0] == report["threads"][0]
        else:
            assert sent == report
    assert sum("truncated" in json.loads(m["msg"]) for m in got) == 1
    assert 6000 < len(json.dumps(report)) < 60000  # only the small sink had to shrink it
