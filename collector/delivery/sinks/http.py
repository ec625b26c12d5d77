"""POST to a log pipeline over HTTP(S): NDJSON (Vector, Fluent Bit, Loki's
and Elasticsearch's JSON-lines endpoints), or the Journal Export Format that
systemd-journal-remote takes (flavour "journal-remote"). TLS, headers,
token and retries are post.py's; a report that still fails is spooled."""
from __future__ import annotations

from ...journal import encode
from ..journal_entry import fields, realtime_usec
from . import Sink, line
from .post import Poster

RETRYABLE = {408, 429, 500, 502, 503, 504}
TYPES = {"ndjson": "application/x-ndjson", "journal-remote": "application/vnd.fdo.journal"}


def export_entry(report: dict) -> bytes:
    return encode([("__REALTIME_TIMESTAMP", realtime_usec(report)),
                   *fields(report, "collector")]) + b"\n"


class HttpSink(Sink):
    def __init__(self, settings: dict):
        super().__init__(settings)
        self.batch, self.batch_bytes = settings["batch_reports"], settings["batch_bytes"]
        self.poster = Poster(settings, settings["url"])

    def body(self, reports: list[dict]) -> bytes:
        one = export_entry if self.settings["flavour"] == "journal-remote" else line
        return b"".join(one(r) for r in reports)

    def send(self, reports: list[dict]) -> None:
        self.poster.post(self.body(reports), TYPES[self.settings["flavour"]], RETRYABLE)
