"""The report `collector symbolize` reads, at its door: any bytes, any JSON,
and a real report with any part replaced by any JSON value go through the
whole path a report takes (conform, symbolize, redact, fingerprint, JSON and
text output) with BadReport or a report, never another exception."""
from __future__ import annotations

import copy
import json
import string
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from collector.commands.symbolize import parse_report
from collector.delivery import fingerprint, redact
from collector.delivery.sinks import line
from collector.errors import BadReport

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "collector" / "schema" /
                     "report-v1.json").read_text())
from collector.symbolize import symbolize
from collector.text import render

FRAME = {"index": 0, "pc": 0x401136, "sp": 0x7ffc0, "cfa": None, "module": "/bin/true",
         "build_id": "ab" * 20, "rel_pc": 0x1136, "function": "_ZN4shop4mainEv", "offset": 6,
         "method": "context", "file": "a.c", "line": 3, "column": 1}
REPORT = {
    "schema_version": 1, "report_id": "00000000-0000-4000-8000-000000000000",
    "collector": {"version": "0.1.0"}, "time": "2026-01-01T00:00:00Z",
    "host": {"hostname": "h", "kernel": "6"}, "source": "core",
    "process": {"pid": 7, "exe": "/bin/true", "cmdline": ["true", "--password=x"], "uid": 0,
                "gid": 0, "state": "running", "environ": {"A": "b"}},
    "signal": {"number": 11, "name": "SIGSEGV", "si_code": 1, "si_addr": 0},
    "threads": [{"tid": 7, "name": "true", "state": "R", "registers": {"rip": 1, "rsp": 2},
                 "frames": [FRAME, dict(FRAME, index=1, method="cfi", inlined=True)],
                 "stop_reason": "end", "crashed": True, "methods": {"cfi": 1}}],
    "modules": [{"path": "/bin/true", "build_id": None, "start": 0, "end": 1, "load_bias": 0}],
    "timings": {"stopped_ms": 1.0, "unwind_ms": 1.0}, "errors": [], "core": {"path": "/c"},
}


def through(raw: bytes) -> None:
    """What `collector symbolize --format json|text` does with `raw`."""
    try:
        report = parse_report(raw, "r.json")
    except BadReport as e:
        assert "\n" not in str(e)
        return
    symbolize(report, 0.5)
    report = redact.apply(report, redact.Policy())
    report["fingerprint"] = fingerprint.compute(report)
    json.loads(line(report))
    render(report)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False,
                                                                          allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))


PATHS = [p for p in paths(REPORT) if p]


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), JSON), min_size=1, max_size=4))
def test_a_report_with_parts_replaced(replacements):
    report = copy.deepcopy(REPORT)
    for path, value in replacements:
        node = report
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed the way there
    through(json.dumps(report).encode())


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_any_json(value):
    through(json.dumps(value).encode())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200) | st.text(string.printable, max_size=200).map(str.encode))
def test_any_bytes(raw):
    through(raw)


@pytest.mark.parametrize("raw, why", [
    (b"[" * 100000 + b"]" * 100000, "nests"),
    (b'{"threads":[' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"]}", "nests deeper"),
    (b'{"threads":[{"frames":[{"pc":NaN}]}]}', "NaN"),
    (b'{"threads":[{"frames":[{"pc":1e400}]}]}', "too large"),
    (b'{"threads":[{"frames":[{"pc":' + b"9" * 5000 + b"}]}]}", "not JSON"),
    (b"\xff\xfe", "UTF-8"),
    (b'{"threads":{}}', "threads of frames"),
    (b'{"threads":[{"frames":{}}]}', "threads of frames"),
])
def test_not_a_report(raw, why):
    with pytest.raises(BadReport, match=why):
        parse_report(raw, "r.json")


def test_wrong_types_are_dropped_and_said():
    report = copy.deepcopy(REPORT)
    report["process"]["cmdline"] = ["a", 5]
    report["threads"][0]["frames"][0]["pc"] = "0x10"
    report["threads"][0]["frames"][1]["method"] = "magic"
    report["core"] = 3
    out = parse_report(json.dumps(report).encode(), "r.json")
    assert out["process"]["cmdline"] == ["a"] and "core" not in out
    assert "pc" not in out["threads"][0]["frames"][0]
    assert "method" not in out["threads"][0]["frames"][1]
    assert out["errors"] == [
        "report.process.cmdline[1] is not a string: dropped",
        "report.threads[0].frames[0].pc is not an integer: dropped",
        "report.threads[0].frames[1].method is not one of " + ", ".join(
            f'"{m}"' for m in SCHEMA["$defs"]["frame"]["properties"]["method"]["enum"])
        + ": dropped",
        "report.core is not an object: dropped"]
    assert parse_report(json.dumps(REPORT).encode(), "r.json")["errors"] == []
