"""Real log receivers for the sink tests, each started on loopback or in a
temp dir, bounded in time and stopped (and its files removed) on every exit
path: rsyslog, systemd-journald in a journal namespace,
systemd-journal-remote, a recording HTTP server in a thread, and an OTLP/HTTP
logs receiver that decodes with opentelemetry-proto."""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

JOURNALD = "/lib/systemd/systemd-journald"
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(path: str, package: str) -> None:
    if not shutil.which(path) and not os.path.exists(path):
        pytest.skip(f"{path} is missing: scripts/venv test installs the {package} package "
                    "(needs root)")


def wait_for(what: str, check, proc: subprocess.Popen | None = None, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"{what} exited early (rc={proc.returncode}): {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready within {timeout}s")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


# ------------------------------------------------------------------ rsyslog

RSYSLOG_CONF = """\
global(workDirectory="{dir}" maxMessageSize="512k")
module(load="imudp")
module(load="imtcp")
module(load="imuxsock" SysSock.Use="off")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
input(type="imuxsock" Socket="{dir}/log.sock" useSpecialParser="off" parseHostname="on")
template(name="fields" type="list") {{
  property(name="inputname") constant(value="\\t")
  property(name="protocol-version") constant(value="\\t")
  property(name="pri") constant(value="\\t")
  property(name="app-name") constant(value="\\t")
  property(name="msgid") constant(value="\\t")
  property(name="structured-data") constant(value="\\t")
  property(name="msg") constant(value="\\n")
}}
*.* action(type="omfile" file="{dir}/received.log" template="fields")
"""


class Rsyslog:
    def __init__(self, directory: Path):
        self.dir = directory
        self.udp, self.tcp = free_port(), free_port()
        self.socket = directory / "log.sock"
        self.out = directory / "received.log"

    def lines(self) -> list[dict]:
        """What rsyslog parsed, one dict per message."""
        if not self.out.exists():
            return []
        keys = ("input", "version", "pri", "app", "msgid", "sd", "msg")
        return [dict(zip(keys, x.split("\t", 6), strict=False))
                for x in self.out.read_text().splitlines()]

    def wait_lines(self, n: int, timeout: float = 15.0) -> list[dict]:
        wait_for(f"{n} messages in {self.out}", lambda: len(self.lines()) >= n, timeout=timeout)
        return self.lines()


@contextlib.contextmanager
def rsyslog(directory: Path):
    need("rsyslogd", "rsyslog")
    r = Rsyslog(directory)
    conf = directory / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(dir=directory, udp=r.udp, tcp=r.tcp))
    proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(directory / "pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for("rsyslogd", lambda: port_open(r.tcp) and r.socket.exists(), proc)
        yield r
    finally:
        stop(proc)


# --------------------------------------------------------- journald (real)


class JournalNamespace:
    def __init__(self, name: str):
        self.name = name
        self.socket = f"/run/systemd/journal.{name}/socket"

    def entries(self, *match: str) -> list[dict]:
        r = subprocess.run(["journalctl", f"--namespace={self.name}", "--all", "-o", "json",
                            "--no-pager", *match], capture_output=True, text=True, timeout=30)
        return [json.loads(x) for x in r.stdout.splitlines() if x.strip()]

    def wait_entries(self, n: int, *match: str, timeout: float = 15.0) -> list[dict]:
        wait_for(f"{n} journal entries", lambda: len(self.entries(*match)) >= n, timeout=timeout)
        return self.entries(*match)


@contextlib.contextmanager
def journald():
    """A real systemd-journald, not PID 1's: started in its own journal
    namespace (systemd-journald NAMESPACE), so it has its own socket under
    /run/systemd/journal.NAMESPACE/ and its own files, removed afterwards."""
    need(JOURNALD, "systemd")
    ns = JournalNamespace(f"collectortest{uuid.uuid4().hex[:10]}")
    proc = subprocess.Popen([JOURNALD, ns.name], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for("systemd-journald", lambda: os.path.exists(ns.socket), proc)
        yield ns
    finally:
        stop(proc)
        shutil.rmtree(f"/run/systemd/journal.{ns.name}", ignore_errors=True)
        machine = Path("/etc/machine-id").read_text().strip()
        for root in ("/var/log/journal", "/run/log/journal"):
            shutil.rmtree(f"{root}/{machine}.{ns.name}", ignore_errors=True)


# ---------------------------------------------------------------- debuginfod


@contextlib.contextmanager
def debuginfod_server(served: Path, db: Path, probe: str):
    """debuginfod serving the ELF files in `served`; yields its URL once
    `probe` (a /buildid/ID/KIND path) answers."""
    if shutil.which("debuginfod") is None:
        pytest.skip("debuginfod is not installed (apt-get install debuginfod)")
    port = free_port()
    proc = subprocess.Popen(["debuginfod", "-F", str(served), "-p", str(port), "-d", str(db),
                             "-t", "0", "-g", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                with urllib.request.urlopen(url + probe, timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, "debuginfod exited"
                assert time.monotonic() < deadline, "debuginfod did not serve the file in 30 s"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --------------------------------------------------- systemd-journal-remote


@contextlib.contextmanager
def journal_remote(directory: Path):
    need(JOURNAL_REMOTE, "systemd-journal-remote")
    port = free_port()
    out = directory / "remote.journal"
    proc = subprocess.Popen([JOURNAL_REMOTE, f"--listen-http=127.0.0.1:{port}",
                             "--split-mode=none", f"--output={out}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for("systemd-journal-remote", lambda: port_open(port), proc)
        yield port, out
    finally:
        stop(proc)


def journal_file_entries(path: Path) -> list[dict]:
    r = subprocess.run(["journalctl", "--file", str(path), "--all", "-o", "json", "--no-pager"],
                       capture_output=True, text=True, timeout=30)
    return [json.loads(x) for x in r.stdout.splitlines() if x.strip()]


# ------------------------------------------------------------- HTTP server


class Recorder(http.server.ThreadingHTTPServer):
    """Records every POST (path, headers, body); answers `fail_next` of them
    with 503 first, and sleeps `delay` seconds before answering."""
    daemon_threads = True

    def __init__(self, port: int = 0):
        self.requests: list[dict] = []
        self.fail_next = 0
        self.delay = 0.0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), Handler)

    def bodies(self) -> list[bytes]:
        with self.lock:
            return [r["body"] for r in self.requests if r["status"] == 200]

    def reports(self) -> list[dict]:
        return [json.loads(x) for b in self.bodies() for x in b.splitlines() if x.strip()]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.server.delay)
        with self.server.lock:
            status = 503 if self.server.fail_next > 0 else 200
            self.server.fail_next -= status == 503
            self.server.requests.append({"path": self.path, "headers": dict(self.headers),
                                         "body": body, "status": status})
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(server):
    """`server` answering in a thread of its own until the block ends."""
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=5)


@contextlib.contextmanager
def http_server(port: int = 0, tls: tuple[Path, Path] | None = None):
    server = Recorder(port)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server


# ------------------------------------------------------------- OTLP/HTTP


class OtlpReceiver(Recorder):
    """An OTLP/HTTP logs receiver: each POST decoded with opentelemetry-proto's
    generated classes by its Content-Type (strictly: an unknown JSON field is
    a 400), answered with an ExportLogsServiceResponse in the same encoding,
    or with the next (status, headers) of `script` first."""

    def __init__(self, port: int = 0):
        super().__init__(port)
        self.RequestHandlerClass = OtlpHandler
        self.script: list[tuple[int, dict]] = []

    def exports(self) -> list:
        """The ExportLogsServiceRequests answered 200, in order."""
        with self.lock:
            return [r["export"] for r in self.requests if r["status"] == 200]

    def records(self) -> list[tuple]:
        """(resource attributes as a dict, LogRecord) of every accepted record."""
        return [(attrs(rl.resource.attributes), rec) for e in self.exports()
                for rl in e.resource_logs for sl in rl.scope_logs for rec in sl.log_records]


def attrs(kvs) -> dict:
    """KeyValues -> {key: python value} (a key twice would be a bug: kept as a list)."""
    out = {}
    for kv in kvs:
        v = getattr(kv.value, kv.value.WhichOneof("value"))
        out[kv.key] = [out[kv.key], v] if kv.key in out else v
    return out


class OtlpHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        from google.protobuf import json_format
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as pb
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        kind = self.headers.get("Content-Type")
        export, status, extra = None, 200, {}
        try:
            if kind == "application/json":
                export = json_format.Parse(body, pb.ExportLogsServiceRequest())
            elif kind == "application/x-protobuf":
                export = pb.ExportLogsServiceRequest.FromString(body)
            else:
                status = 415
        except Exception:  # what a receiver says to bad data
            status = 400
        with self.server.lock:
            if status == 200 and self.server.script:
                status, extra = self.server.script.pop(0)
            self.server.requests.append({"path": self.path, "headers": dict(self.headers),
                                         "body": body, "status": status, "export": export,
                                         "time": time.monotonic()})
        answer = pb.ExportLogsServiceResponse()
        data = answer.SerializeToString() if kind == "application/x-protobuf" else \
            json_format.MessageToJson(answer).encode()
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Type", kind or "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def otlp_receiver(port: int = 0):
    import opentelemetry.proto  # noqa: F401  (the test extra has it: fail here, not in a thread)
    server = OtlpReceiver(port)
    with serving(server):
        yield server


def self_signed(directory: Path) -> tuple[Path, Path]:
    need("openssl", "openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=30)
    return cert, key


# ---------------------------------------------------------------- config


def toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(map(toml, value)) + "]"
    return json.dumps(value)  # strings, numbers


def config(directory: Path, *sinks: dict, extra: str = "") -> Path:
    """A configuration with these [[sink]]s, its state and spool in `directory`."""
    path = directory / "collector.toml"
    text = f'{extra}\n[collector]\nstate_dir = "{directory}/state"\n' \
           f'[spool]\ndir = "{directory}/spool"\n'
    for sink in sinks:
        text += "\n[[sink]]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in sink.items())
    path.write_text(text)
    return path


STDOUT = {"type": "stdout"}
