"""POST to a log pipeline over HTTP(S): NDJSON (Vector, Fluent Bit, Loki's
and Elasticsearch's JSON-lines endpoints), or the Journal Export Format that
systemd-journal-remote takes (flavour "journal-remote"). TLS is verified
unless `verify = false`; a failed attempt is retried with exponential
backoff and full jitter, then left to the spool."""
from __future__ import annotations

import http.client
import random
import ssl
import time
from urllib.parse import urlsplit

from ...journal import encode
from ..journal_entry import fields, realtime_usec
from . import Sink, SinkError, line

RETRYABLE = {408, 429, 500, 502, 503, 504}
TYPES = {"ndjson": "application/x-ndjson", "journal-remote": "application/vnd.fdo.journal"}


def export_entry(report: dict) -> bytes:
    return encode([("__REALTIME_TIMESTAMP", realtime_usec(report)),
                   *fields(report, "collector")]) + b"\n"


class HttpSink(Sink):
    def __init__(self, settings: dict):
        super().__init__(settings)
        self.batch, self.batch_bytes = settings["batch_reports"], settings["batch_bytes"]
        self.url = urlsplit(settings["url"])

    def body(self, reports: list[dict]) -> bytes:
        one = export_entry if self.settings["flavour"] == "journal-remote" else line
        return b"".join(one(r) for r in reports)

    def headers(self) -> dict:
        h = {"Content-Type": TYPES[self.settings["flavour"]], "User-Agent": "collector",
             **self.settings["headers"]}
        if self.settings["token_file"]:
            try:
                with open(self.settings["token_file"]) as f:
                    h["Authorization"] = "Bearer " + f.read().strip()
            except OSError as e:
                raise SinkError(f"token_file {self.settings['token_file']}: {e.strerror}") from None
        return h

    def connection(self) -> http.client.HTTPConnection:
        timeout = self.settings["timeout"]
        if self.url.scheme == "http":
            return http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=timeout)
        ctx = ssl.create_default_context(cafile=self.settings["ca_file"] or None)
        if not self.settings["verify"]:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(self.url.hostname, self.url.port, timeout=timeout,
                                           context=ctx)

    def post(self, body: bytes, headers: dict) -> None:
        """Raises SinkError(why, worth retrying)."""
        path = (self.url.path or "/") + (f"?{self.url.query}" if self.url.query else "")
        conn = self.connection()
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read(65536)
            if 200 <= resp.status < 300:
                return None
            raise SinkError(f"HTTP {resp.status} {resp.reason}", resp.status in RETRYABLE)
        except (OSError, http.client.HTTPException) as e:
            raise SinkError(f"{type(e).__name__}: {e}", True) from None
        finally:
            conn.close()

    def send(self, reports: list[dict]) -> None:
        body, headers = self.body(reports), self.headers()
        attempts = self.settings["retries"] + 1
        for attempt in range(attempts):
            try:
                self.post(body, headers)
                return
            except SinkError as e:
                retry = e.args[1]
                if not retry or attempt == attempts - 1:
                    raise SinkError(f"{self.settings['url']}: {e.args[0]} "
                                    f"(after {attempt + 1} attempts)") from None
            time.sleep(random.uniform(0, self.settings["backoff"] * 2 ** attempt))
