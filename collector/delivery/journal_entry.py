"""A report as a journal entry: its fields, in the style of
systemd-coredump's COREDUMP_* (the journald sink and the http sink's
journal-remote flavour send them; the wire formats are in journal.py)."""
from __future__ import annotations

import datetime
import json
import os

from .fingerprint import crashed_thread, meaningful

MESSAGE_ID = "240e15496e22413d9aad847ae5229b41"  # "a crash report", ours for good


def signal_of(report: dict) -> tuple[int | None, str | None]:
    sig = report.get("signal")
    if isinstance(sig, dict):
        return sig.get("number"), sig.get("name")
    return (sig, None) if isinstance(sig, int) else (None, None)


def summary(report: dict) -> str:
    """One line: who, what, where."""
    p = report.get("process") or {}
    who = f"{p.get('exe') or p.get('name') or '?'} (pid {p.get('pid')})"
    number, name = signal_of(report)
    what = f"crashed with {name or f'signal {number}'}" if number or name else "backtrace"
    top = next(meaningful(crashed_thread(report.get("threads") or [])), None)
    where = ""
    if top:
        module = os.path.basename(top["module"]) if top.get("module") else "?"
        where = f" at {top.get('function') or hex(top['pc'])} ({module})"
    return f"{who} {what}{where}"


def fields(report: dict, identifier: str) -> list[tuple[str, str]]:
    p = report.get("process") or {}
    number, name = signal_of(report)
    out = [("MESSAGE", summary(report)), ("MESSAGE_ID", MESSAGE_ID),
           ("PRIORITY", "2" if number or name else "5"), ("SYSLOG_IDENTIFIER", identifier),
           ("COLLECTOR_REPORT_ID", report.get("report_id")),
           ("COLLECTOR_FINGERPRINT", report.get("fingerprint")),
           ("COLLECTOR_SOURCE", report.get("source")), ("COLLECTOR_TIMESTAMP", report.get("time")),
           ("COLLECTOR_PID", p.get("pid")), ("COLLECTOR_UID", p.get("uid")),
           ("COLLECTOR_GID", p.get("gid")), ("COLLECTOR_EXE", p.get("exe")),
           ("COLLECTOR_COMM", p.get("name")),
           ("COLLECTOR_CMDLINE", " ".join(p.get("cmdline") or []) or None),
           ("COLLECTOR_SIGNAL", number), ("COLLECTOR_SIGNAL_NAME", name),
           ("COLLECTOR_SUPPRESSED", (report.get("suppressed") or {}).get("count")),
           ("COLLECTOR_REPORT", json.dumps(report, separators=(",", ":")))]
    return [(k, str(v)) for k, v in out if v is not None]


def realtime_usec(report: dict) -> str:
    try:
        t = datetime.datetime.fromisoformat(report["time"].replace("Z", "+00:00"))
    except (KeyError, ValueError, AttributeError):
        t = datetime.datetime.now(datetime.timezone.utc)
    return str(int(t.timestamp() * 1_000_000))
