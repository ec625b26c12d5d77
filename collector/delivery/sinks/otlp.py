"""OpenTelemetry logs over OTLP/HTTP: one LogRecord per report (event
`process.crash`, FATAL for a crash, INFO for a snapshot, the text backtrace
as body, semantic-convention attributes), as OTLP/JSON, or as protobuf with
the optional opentelemetry-proto package. Retried only on 429/502/503/504
(OTLP's retryable codes); any other refusal is for good (set aside)."""
from __future__ import annotations

import datetime
import json
import os
import pwd
import time
from urllib.parse import urlsplit

from ... import __version__
from ...logging import log
from ...text import render
from ..fingerprint import crashed_thread, meaningful
from ..journal_entry import signal_of, summary
from . import Rejected, Sink, SinkError
from .post import Poster

EVENT = "process.crash"
RETRYABLE = {429, 502, 503, 504}
TYPES = {"http/json": "application/json", "http/protobuf": "application/x-protobuf"}
MACHINE_ID = "/etc/machine-id"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
EXTRA = ('protocol = "http/protobuf" needs the opentelemetry-proto package '
         "(pip install 'collector[otlp]')")


def value(v) -> dict:
    """An AnyValue in OTLP/JSON: int64 as a decimal string."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    return {"stringValue": str(v)}


def attributes(pairs: list[tuple[str, object]]) -> list[dict]:
    """KeyValues of the known values only: unknown is absent."""
    return [{"key": k, "value": value(v)} for k, v in pairs if v is not None and v != ""]


def unix_nano(stamp: str | None) -> str | None:
    try:
        t = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return str((t - EPOCH) // datetime.timedelta(microseconds=1) * 1000)


def service(process: dict) -> str | None:
    """service.name: the innermost systemd unit the process runs in, if that
    is a .service (a .scope is a session or an app, not a service), else the
    executable's name."""
    inner = process.get("user_unit") or process.get("unit")
    if isinstance(inner, str) and inner.endswith(".service"):
        return inner
    exe = process.get("exe")
    return os.path.basename(exe) if exe else process.get("name")


def machine_id() -> str | None:
    try:
        with open(MACHINE_ID) as f:
            return f.read(64).strip() or None
    except OSError:
        return None


def owner(uid) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name if isinstance(uid, int) else None
    except KeyError:
        return None


def resource(report: dict) -> list[dict]:
    return attributes([("host.name", (report.get("host") or {}).get("hostname")),
                       ("host.id", machine_id()),
                       ("service.name", service(report.get("process") or {})),
                       ("os.type", "linux")])


def record(report: dict) -> dict:
    p = report.get("process") or {}
    number, name = signal_of(report)
    crash = bool(number or name)
    thread = crashed_thread(report.get("threads") or []) or {}
    top = next(meaningful(thread), None) or {}
    pairs = []
    if crash:
        alone = {**report, "threads": [thread] if thread else [], "errors": []}
        pairs += [("exception.type", name or f"signal {number}"),
                  ("exception.message", summary(report)),
                  ("exception.stacktrace", render(alone))]
    exe = p.get("exe")
    pairs += [("process.pid", p.get("pid")), ("process.executable.path", exe),
              ("process.executable.name", os.path.basename(exe) if exe else p.get("name")),
              ("process.command_line", " ".join(p.get("cmdline") or [])),
              ("process.owner", owner(p.get("uid"))),
              ("thread.id", thread.get("tid")), ("thread.name", thread.get("name")),
              ("code.function.name", top.get("function")), ("code.file.path", top.get("file")),
              ("code.line.number", top.get("line")),
              ("collector.report_id", report.get("report_id")),
              ("collector.fingerprint", report.get("fingerprint")),
              ("collector.report", json.dumps(report, separators=(",", ":")))]
    out = {"severityNumber": 21 if crash else 9, "severityText": "FATAL" if crash else "INFO",
           "body": {"stringValue": render(report)}, "attributes": attributes(pairs),
           "eventName": EVENT}
    when = unix_nano(report.get("time"))
    if when:  # the collector saw it when it stopped the target
        out["timeUnixNano"] = out["observedTimeUnixNano"] = when
    else:
        out["observedTimeUnixNano"] = str(time.time_ns())
    return out


def request(reports: list[dict]) -> dict:
    """An ExportLogsServiceRequest in OTLP/JSON: one ResourceLogs per resource."""
    groups: dict[str, tuple[list, list]] = {}
    for r in reports:
        res = resource(r)
        groups.setdefault(json.dumps(res), (res, []))[1].append(record(r))
    scope = {"name": "collector", "version": __version__}
    return {"resourceLogs": [{"resource": {"attributes": res},
                              "scopeLogs": [{"scope": scope, "logRecords": records}]}
                             for res, records in groups.values()]}


def proto():
    """opentelemetry-proto's logs service module, or SinkError naming the extra."""
    try:
        from google.protobuf import json_format
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    except ImportError:
        raise SinkError(EXTRA) from None
    return json_format, logs_service_pb2


class OtlpSink(Sink):
    def __init__(self, settings: dict):
        super().__init__(settings)
        self.batch, self.batch_bytes = settings["batch_reports"], settings["batch_bytes"]
        url = settings["endpoint"]
        if urlsplit(url).path in ("", "/"):  # no path: OTLP's default one
            url = url.rstrip("/") + "/v1/logs"
        self.poster = Poster(settings, url)

    def encode(self, reports: list[dict]) -> bytes:
        data = request(reports)
        if self.settings["protocol"] == "http/json":
            return json.dumps(data, separators=(",", ":")).encode()
        json_format, pb = proto()
        # an older opentelemetry-proto has no event_name: the attribute set still says it all
        msg = json_format.ParseDict(data, pb.ExportLogsServiceRequest(), ignore_unknown_fields=True)
        return msg.SerializeToString()

    def send(self, reports: list[dict]) -> None:
        r = self.poster.post(self.encode(reports), TYPES[self.settings["protocol"]], RETRYABLE,
                             refused=Rejected)
        rejected, message = self.partial(r.body)
        if rejected or message:  # accepted: OTLP forbids sending it again either way
            log.warning("receiver rejected part of a request", sink=self.name,
                        rejected_log_records=rejected, message=message,
                        report_ids=[x.get("report_id") for x in reports])

    def partial(self, body: bytes) -> tuple[int, str]:
        """ExportLogsServiceResponse.partial_success: (rejected, error_message)."""
        if not body:
            return 0, ""
        try:
            if self.settings["protocol"] == "http/json":
                p = json.loads(body).get("partialSuccess") or {}
                return int(p.get("rejectedLogRecords") or 0), str(p.get("errorMessage") or "")
            _, pb = proto()
            p = pb.ExportLogsServiceResponse.FromString(body).partial_success
            return p.rejected_log_records, p.error_message
        except Exception:  # a 2xx with a body we cannot read is still a 2xx
            return 0, ""
