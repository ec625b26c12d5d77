"""Configuration: one TOML file (default /etc/collector/collector.toml), then
environment variables, then command-line options. Every problem is one
ConfigError naming the file, line and key."""
from __future__ import annotations

import os
import re

from .errors import ConfigError

DEFAULT_PATH = "/etc/collector/collector.toml"
# environment variable -> key it sets (the CLI has --config, --set, --sink, --log-level)
ENV = {"COLLECTOR_STATE_DIR": "collector.state_dir", "COLLECTOR_SPOOL_DIR": "spool.dir",
       "COLLECTOR_LOG_LEVEL": "log.level", "COLLECTOR_LOG_TARGET": "log.target"}

SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | int | float) -> float:
    """'30d', '12h', '90min', 3600 -> seconds; ValueError otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = re.fullmatch(r"\s*([\d.]+)\s*([a-z]*)\s*", str(text).lower())
    if not m or m.group(2) not in ("", *DURATION_UNITS):
        raise ValueError(text)
    return float(m.group(1)) * DURATION_UNITS.get(m.group(2), 1)


def parse_size(text: str | int) -> int:
    """'256K', '1M', '10m', 4096 -> bytes; ValueError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    t = str(text).strip().lower().rstrip("ib")
    if t and t[-1] in SIZE_UNITS:
        return int(float(t[:-1]) * SIZE_UNITS[t[-1]])
    return int(t)


SECRET_CMDLINE = (r"(?i)^--?[\w.-]*(token|secret|password|passwd|key|credential|auth)[\w.-]*"
                  r"=(?P<secret>.+)$")

# section -> key -> (kind, default); kind is a type, a tuple of choices, or
# "size"/"duration"/"regexes"
# syslog facilities by name (RFC 5424 section 6.2.1)
FACILITIES = {name: code for code, name in enumerate(
    "kern user mail daemon auth syslog lpr news uucp cron authpriv ftp".split())}
FACILITIES.update({f"local{i}": 16 + i for i in range(8)})

SECTIONS = {
    "collector": {"state_dir": (str, "/var/lib/collector")},
    "log": {"level": (("debug", "info", "warning", "error"), "warning"),
            "target": (("stderr", "journal"), "stderr")},
    "redact": {"environment": (list, []), "cmdline": ("regexes", [SECRET_CMDLINE])},
    "storm": {"sources": (list, ["core"]),
              "burst": (int, 10), "per_minute": (float, 1.0),
              "global_burst": (int, 100), "global_per_minute": (float, 30.0),
              "max_fingerprints": (int, 1024)},
    "worker": {"user": (str, "nobody"), "memory": ("size", 1 << 30), "cpu": (int, 60),
               "timeout": (float, 30.0)},
    "service": {"cache_images": (int, 256), "cache_memory": ("size", 512 << 20)},
    "spool": {"dir": (str, "/var/spool/collector"), "max_reports": (int, 1000),
              "max_bytes": ("size", 64 << 20), "retry_after": (float, 30.0)},
    "store": {"enabled": (bool, True), "max_reports": (int, 10000),
              "max_bytes": ("size", 256 << 20), "max_age": ("duration", 30 * 86400.0),
              "keep_free": ("size", 1 << 30)},
}
SINK_COMMON = {"type": (("stdout", "file", "journald", "syslog", "http", "otlp"), None),
               "name": (str, None)}
# what the sinks that POST (sinks/post.py) share
POST = {"headers": (dict, {}), "token_file": (str, ""), "ca_file": (str, ""),
        "verify": (bool, True), "timeout": (float, 5.0), "retries": (int, 3),
        "backoff": (float, 0.5), "batch_reports": (int, 100), "batch_bytes": ("size", 1 << 20)}
SINKS = {
    "stdout": {"format": (("json", "text"), "json")},
    "file": {"path": (str, None), "max_bytes": ("size", 10 << 20), "keep": (int, 5),
             "mode": (int, 0o600)},
    "journald": {"socket": (str, "/run/systemd/journal/socket"),
                 "identifier": (str, "collector")},
    "syslog": {"address": (str, "unix:/dev/log"), "facility": (tuple(FACILITIES), "daemon"),
               "max_message": ("size", 65536), "timeout": (float, 5.0)},
    "http": {"url": (str, None), "flavour": (("ndjson", "journal-remote"), "ndjson"), **POST},
    "otlp": {"endpoint": (str, None), "protocol": (("http/json", "http/protobuf"), "http/json"),
             **POST},
}
REQUIRED = {"file": "path", "http": "url", "otlp": "endpoint"}
ADDRESSES = {"syslog": [("address", r"unix:/.+|(udp|tcp)://(\[[0-9a-fA-F:]+\]|[^/:\[\]]+):\d+",
                         "unix:/PATH, udp://HOST:PORT or tcp://HOST:PORT")],
             "http": [("url", r"https?://[^/]+.*", "http(s)://HOST[:PORT]/PATH")],
             "otlp": [("endpoint", r"https?://[^/]+.*", "http(s)://HOST[:PORT]/v1/logs")]}


class Config:
    def __init__(self, path: str | None, sections: dict, sinks: list[dict]):
        self.path = path            # the file read, None if none
        self.sections = sections    # section -> key -> value, defaults filled in
        self.sinks = sinks          # each with type, name and its settings

    def __getitem__(self, section: str) -> dict:
        return self.sections[section]

    def select(self, only=(), fmt: str | None = None) -> list[dict]:
        """The sinks a run uses: those named (`--sink`; stdout always
        exists), else every configured one; `fmt` is the stdout sink's
        format from the command line."""
        specs = self.sinks
        if only:
            known = {s["name"]: s for s in specs} | {"stdout": {"type": "stdout", "name": "stdout",
                                                                 "format": "json"}}
            unknown = [n for n in only if n not in known]
            if unknown:
                raise ConfigError(f"no sink named {', '.join(unknown)} (configured: "
                                  f"{', '.join(known)})")
            specs = [known[n] for n in dict.fromkeys(only)]
        if fmt:
            specs = [{**s, "format": fmt} if s["type"] == "stdout" else s for s in specs]
        return specs


def locate(text: str, table: str, key: str, index: int = 0) -> int | None:
    """Line of `key = ...` inside [table] (or the index-th [[table]]), else of
    the table's header: tomllib gives values, not positions."""
    seen: dict[str, int] = {}
    here, header = False, None
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"\s*\[\[?\s*([\w.-]+)\s*\]", line)
        if m:
            seen[m.group(1)] = seen.get(m.group(1), -1) + 1
            here = m.group(1) == table and seen[table] == index
            header = n if here else header
        elif here and key and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return n
    return header


class Checker:
    def __init__(self, source: str, text: str):
        self.source, self.text = source, text

    def fail(self, table: str, key: str, problem: str, index: int = 0):
        line = locate(self.text, table, key, index) if self.text else None
        where = f"{self.source}:{line}" if line else self.source
        name = f"{table}[{index}]" if table == "sink" else table
        name += f".{key}" if key else ""
        raise ConfigError(f"invalid configuration: {where}: {name}: {problem}")

    def value(self, table: str, key: str, kind, value, index: int = 0):
        if kind == "size":
            try:
                return parse_size(value)
            except ValueError:
                self.fail(table, key, f"not a size: {value!r} (e.g. 10M)", index)
        if kind == "duration":
            try:
                return parse_duration(value)
            except ValueError:
                self.fail(table, key, f"not a duration: {value!r} (e.g. 30d, 12h, 0 for none)",
                          index)
        if kind == "regexes":
            self.value(table, key, list, value, index)
            for v in value:
                try:
                    re.compile(v)
                except (re.error, TypeError) as e:
                    self.fail(table, key, f"not a regular expression: {v!r} ({e})", index)
            return value
        if isinstance(kind, tuple):
            if value not in kind:
                self.fail(table, key, f"must be one of {', '.join(kind)}, not {value!r}", index)
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(table, key, f"must be {kind.__name__}, not {type(value).__name__}", index)
        if kind in (int, float) and value < 0:
            self.fail(table, key, "must not be negative", index)
        if kind is list and not all(isinstance(v, str) for v in value):
            self.fail(table, key, "must be a list of strings", index)
        if kind is dict and not all(isinstance(v, str) for v in value.values()):
            self.fail(table, key, "must be a table of strings", index)
        return value

    def table(self, name: str, given: dict, spec: dict, index: int = 0) -> dict:
        if not isinstance(given, dict):
            self.fail(name, "", "must be a table", index)
        out = {}
        for key, value in given.items():
            if key not in spec:
                self.fail(name, key, f"unknown key (known: {', '.join(spec)})", index)
            out[key] = self.value(name, key, spec[key][0], value, index)
        for key, (_, default) in spec.items():
            out.setdefault(key, default)
        return out

    def sink(self, given, index: int) -> dict:
        kind = given.get("type") if isinstance(given, dict) else None
        if kind not in SINKS:
            self.fail("sink", "type", f"must be one of {', '.join(SINKS)}, not {kind!r}", index)
        out = self.table("sink", given, {**SINK_COMMON, **SINKS[kind]}, index)
        out["name"] = out["name"] or kind
        if kind in REQUIRED and not out[REQUIRED[kind]]:
            self.fail("sink", REQUIRED[kind], f"required for a {kind} sink", index)
        for key, form, example in ADDRESSES.get(kind, ()):
            if not re.fullmatch(form, out[key]):
                self.fail("sink", key, f"{out[key]!r}: expected {example}", index)
        if kind == "file" and (out["mode"] & ~0o770):
            self.fail("sink", "mode", f"{out['mode']:#o}: reports must not be world-readable",
                      index)
        return out


def set_key(data: dict, dotted: str, value) -> None:
    *tables, key = dotted.split(".")
    for t in tables:
        data = data.setdefault(t, {})
    data[key] = value


def override(data: dict, assignment: str) -> None:
    """--set KEY=VALUE, VALUE in TOML syntax (bare words are strings)."""
    key, eq, raw = assignment.partition("=")
    if not eq or not re.fullmatch(r"[\w-]+(\.[\w-]+)+", key.strip()):
        raise ConfigError(f"invalid configuration: --set {assignment!r}: "
                          "expected SECTION.KEY=VALUE")
    import tomllib
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    set_key(data, key.strip(), value)


def _parse(text: str, path: str) -> dict:
    import tomllib  # only when there is a file: it is most of start-up without one
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid configuration: {path}: {e}") from None


def load(path: str | None = None, sets: tuple[str, ...] = (), env=os.environ) -> Config:
    explicit = path or env.get("COLLECTOR_CONFIG")
    path = explicit or DEFAULT_PATH
    text = ""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"invalid configuration: {path}: no such file") from None
        path = None
    except OSError as e:
        raise ConfigError(f"invalid configuration: cannot read {path}: {e.strerror}") from None
    data = _parse(text, path) if text else {}
    for var, key in ENV.items():
        if env.get(var):
            set_key(data, key, env[var])
    for s in sets:
        override(data, s)
    check = Checker(path or "built-in defaults", text)
    sinks = data.pop("sink", [{"type": "stdout"}])
    for name in data:
        if name not in SECTIONS:
            check.fail(name, "", f"unknown section (known: {', '.join([*SECTIONS, 'sink'])})")
    sections = {name: check.table(name, data.get(name, {}), spec)
                for name, spec in SECTIONS.items()}
    if not isinstance(sinks, list):
        check.fail("sink", "", "must be an array of tables: [[sink]]")
    sinks = [check.sink(s, i) for i, s in enumerate(sinks)]
    names = [s["name"] for s in sinks]
    for i, n in enumerate(names):
        if names.index(n) != i:
            check.fail("sink", "name", f"two sinks are named {n!r}: give each a unique name", i)
    return Config(path, sections, sinks)


def add_arguments(p, suppress: bool = False) -> None:
    """The global options, accepted before or after the command."""
    import argparse  # here: the pipe handler loads the configuration before any parser
    d = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument("--config", metavar="PATH", **({"default": None} | d),
                   help=f"configuration file (default $COLLECTOR_CONFIG or {DEFAULT_PATH})")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", **({"default": []} | d),
                   help="override one setting, e.g. --set storm.burst=5")
    p.add_argument("--sink", action="append", metavar="NAME", **({"default": []} | d),
                   help="deliver only to these configured sinks ('stdout' always exists)")
    p.add_argument("--log-level", choices=SECTIONS["log"]["level"][0],
                   **({"default": None} | d), help="the collector's own diagnostics")
