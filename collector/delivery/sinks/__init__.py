"""Where reports go. A sink sends a batch of reports or raises SinkError;
delivery/deliver.py decides what happens then (retry later from the spool)."""
from __future__ import annotations

import json


class SinkError(Exception):
    """The sink could not take the report now; it is worth retrying later."""


class Rejected(SinkError):
    """The receiver refused the reports for good (OTLP's 400): sending them
    again cannot help, so they are set aside rather than queued."""


class Sink:
    spool = True   # a failed send is kept and retried; False for stdout
    batch = 1        # reports per send() at most
    batch_bytes = 0  # and their spooled size at most (beyond the first); 0: no limit

    def __init__(self, settings: dict):
        self.name = settings["name"]
        self.settings = settings

    def send(self, reports: list[dict]) -> None:
        raise NotImplementedError


def line(report: dict) -> bytes:
    """One report as one JSON line (NDJSON); ASCII, so no raw newline inside."""
    return json.dumps(report, separators=(",", ":")).encode() + b"\n"


KINDS = {"stdout": "StdoutSink", "file": "FileSink", "journald": "JournaldSink",
         "syslog": "SyslogSink", "http": "HttpSink", "otlp": "OtlpSink"}


def make(settings: dict) -> Sink:
    import importlib  # only the configured kinds: http alone imports ssl
    kind = settings["type"]
    module = importlib.import_module(f".{kind}", __name__)
    return getattr(module, KINDS[kind])(settings)
