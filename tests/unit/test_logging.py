"""The collector's own diagnostics: JSON lines on stderr by default; with
the journal target, native journal datagrams (decoded here as journald
decodes them), secrets scrubbed either way."""
from __future__ import annotations

import json
import socket
import struct

import pytest

from collector import logging


def decode(datagram: bytes) -> dict[str, str]:
    """The native protocol: NAME=value lines, or NAME, le64 size, bytes."""
    out, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k, (n,) = line, struct.unpack_from("<Q", datagram, nl + 1)
            v = datagram[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        out[k.decode()] = v.decode()
    return out


@pytest.fixture(autouse=True)
def restore():
    yield
    logging.setup()


def test_logging_config_json_on_stderr(capsys):
    logging.setup("info", "stderr")
    logging.log.info("report spooled", sink="http", api_token="t0k")
    logging.log.debug("not shown")
    (line,) = capsys.readouterr().err.splitlines()
    event = json.loads(line)
    assert event["event"] == "report spooled" and event["sink"] == "http"
    assert event["level"] == "info" and event["api_token"] == "<redacted>"


def test_logging_config_journal_target(tmp_path, monkeypatch):
    path = str(tmp_path / "journal.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        monkeypatch.setattr(logging, "JOURNAL_SOCKET", path)
        logging.setup("warning", "journal")
        logging.log.warning("sink failed", sink="http", error="refused\nline two")
        logging.log.info("not shown")
        fields = decode(server.recv(65536))
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.recv(65536)
    assert fields["MESSAGE"] == "sink failed" and fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "collector"
    assert fields["COLLECTOR_SINK"] == "http" and fields["COLLECTOR_ERROR"] == "refused\nline two"


def test_a_filtered_message_loads_no_structlog():
    """A quiet run's debug lines (a pipe handler's) must not cost structlog's import."""
    import subprocess
    import sys
    code = ("import sys\nfrom collector import logging\nlogging.setup('warning')\n"
            "logging.log.debug('worker', pid=1)\nlogging.log.info('x')\n"
            "print('structlog' in sys.modules)\nlogging.log.warning('shown')\n"
            "print('structlog' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["False", "True"], r
    assert '"event": "shown"' in r.stderr and "worker" not in r.stderr, r.stderr
