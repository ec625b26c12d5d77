"""RFC 5424 syslog over a unix datagram socket, UDP, or TCP with
octet-counting framing (RFC 6587): key fields as structured data, the report
as JSON in MSG, shrunk to fit `max_message` (modules first, then other
threads, then deep frames; what went is listed in `truncated`)."""
from __future__ import annotations

import json
import os
import socket
from urllib.parse import urlsplit

from ...config import FACILITIES
from ..journal_entry import signal_of
from . import Sink, SinkError

SD_ID = "crash@32473"  # 32473: the IANA enterprise number reserved for examples (RFC 5612)


def sd_value(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def header(report: dict, facility: int) -> str:
    p = report.get("process") or {}
    number, name = signal_of(report)
    severity = 2 if number or name else 5
    params = {"report_id": report.get("report_id"), "fingerprint": report.get("fingerprint"),
              "pid": p.get("pid"), "exe": p.get("exe"), "signal": name or number,
              "suppressed": (report.get("suppressed") or {}).get("count")}
    sd = " ".join(f'{k}="{sd_value(v)}"' for k, v in params.items() if v is not None)
    host = (report.get("host") or {}).get("hostname") or "-"
    return (f"<{facility * 8 + severity}>1 {report.get('time') or '-'} {host} collector "
            f"{os.getpid()} {report.get('source') or '-'} [{SD_ID} {sd}] ")


def shrink(report: dict, room: int) -> bytes:
    """The report as JSON in at most `room` bytes, or as close as it gets."""
    steps = [("modules", lambda r: {**r, "modules": []}),
             ("threads", lambda r: {**r, "threads": [t for t in r["threads"]
                                                     if t.get("crashed")] or r["threads"][:1]}),
             ("frames", lambda r: {**r, "threads": [{**t, "frames": t["frames"][:16]}
                                                    for t in r["threads"]]})]
    data = json.dumps(report, separators=(",", ":")).encode()
    dropped: list[str] = []
    for what, step in steps:
        if len(data) <= room:
            break
        dropped.append(what)
        report = step({**report, "truncated": dropped})
        data = json.dumps(report, separators=(",", ":")).encode()
    return data


class SyslogSink(Sink):
    def message(self, report: dict) -> bytes:
        head = header(report, FACILITIES[self.settings["facility"]]).encode()
        return head + shrink(report, self.settings["max_message"] - len(head))

    def send(self, reports: list[dict]) -> None:
        address = self.settings["address"]
        messages = [self.message(r) for r in reports]
        try:
            if address.startswith("unix:"):
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                    for m in messages:
                        s.sendto(m, address[len("unix:"):])
                return
            url = urlsplit(address)
            where = (url.hostname, url.port)
            if url.scheme == "udp":
                family = socket.AF_INET6 if ":" in url.hostname else socket.AF_INET
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    for m in messages:
                        s.sendto(m, where)
                return
            with socket.create_connection(where, timeout=self.settings["timeout"]) as s:
                s.sendall(b"".join(b"%d " % len(m) + m for m in messages))
        except OSError as e:
            raise SinkError(f"syslog at {address}: {e.strerror or e}") from None
