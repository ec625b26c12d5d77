"""HTTP(S) POST for the sinks that speak HTTP (http, otlp): TLS verified
unless `verify = false` (`ca_file` adds a CA), `headers`, a bearer token
from `token_file`, a timeout per attempt, and `retries` of a retryable
failure after the server's Retry-After or else exponential backoff with
full jitter; what is still failing after that is the spool's."""
from __future__ import annotations

import datetime
import email.utils
import http.client
import random
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import SinkError

MAX_WAIT = 30.0  # a longer Retry-After is not slept through here: the spool waits instead
DETAIL = 200     # characters of a text error body quoted in the error


@dataclass
class Response:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an
    HTTP-date, RFC 9110 10.2.3); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def detail(r: Response) -> str:
    """The start of a text error body (OTLP/JSON's Status, a proxy's page)."""
    kind = r.headers.get("Content-Type") or ""
    if not (kind.startswith("text/") or "json" in kind) or not r.body:
        return ""
    text = r.body[:DETAIL].decode("utf-8", "replace")
    return ": " + "".join(c if c.isprintable() else " " for c in text).strip()


class Poster:
    def __init__(self, settings: dict, url: str):
        self.settings, self.where = settings, url
        self.url = urlsplit(url)

    def headers(self, content_type: str) -> dict:
        h = {"Content-Type": content_type, "User-Agent": "collector", **self.settings["headers"]}
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

    def once(self, body: bytes, headers: dict) -> Response:
        path = (self.url.path or "/") + (f"?{self.url.query}" if self.url.query else "")
        conn = self.connection()
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            return Response(resp.status, resp.reason, resp.headers, resp.read(65536))
        finally:
            conn.close()

    def post(self, body: bytes, content_type: str, retryable: set[int],
             refused: type[SinkError] = SinkError) -> Response:
        """The 2xx response; else SinkError, or `refused` for a status that
        is not in `retryable` (such a status is never retried)."""
        headers = self.headers(content_type)
        attempts = self.settings["retries"] + 1
        for attempt in range(1, attempts + 1):
            wait = None
            try:
                r = self.once(body, headers)
            except (OSError, http.client.HTTPException) as e:
                why = f"{type(e).__name__}: {e}"
            else:
                if 200 <= r.status < 300:
                    return r
                why = f"HTTP {r.status} {r.reason}{detail(r)}"
                if r.status not in retryable:
                    raise refused(f"{self.where}: {why} (not retried)")
                wait = retry_after(r.headers.get("Retry-After"))
            if attempt == attempts:
                break
            if wait is None:
                wait = random.uniform(0, self.settings["backoff"] * 2 ** (attempt - 1))
            elif wait > MAX_WAIT:
                raise SinkError(f"{self.where}: {why}: Retry-After {wait:.0f} s is more than "
                                f"{MAX_WAIT:.0f} s (after {attempt} attempts)")
            time.sleep(wait)
        raise SinkError(f"{self.where}: {why} (after {attempts} attempts)")
