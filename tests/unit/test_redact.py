"""Redaction: no environment unless allowed, never a secret-looking name,
command-line arguments masked by pattern."""
from __future__ import annotations

import re

from collector import config
from collector.delivery import redact

DEFAULT = redact.Policy.from_config(config.load(None, env={"COLLECTOR_CONFIG": ""})["redact"])
ENV = {"PATH": "/bin", "LANG": "C", "LC_ALL": "C", "API_TOKEN": "t0k", "DB_PASSWORD": "pw",
       "aws_secret_access_key": "k", "GITHUB_AUTH": "a", "MY_CREDENTIALS": "c",
       "SSH_PRIVATE": "p", "HOME": "/root"}


def report(env=None, cmdline=("prog",)):
    r = {"process": {"pid": 1, "cmdline": list(cmdline)}, "threads": []}
    if env is not None:
        r["process"]["environ"] = dict(env)
    return r


def test_redact_no_environment_by_default():
    out = redact.apply(report(ENV), DEFAULT)
    assert "environ" not in out["process"]


def test_redact_allow_list_and_secret_names_never():
    policy = redact.Policy(environment=("PATH", "LC_*", "*TOKEN*", "*"))
    env = redact.apply(report(ENV), policy)["process"]["environ"]
    assert env == {"PATH": "/bin", "LANG": "C", "LC_ALL": "C", "HOME": "/root"}
    narrow = redact.apply(report(ENV), redact.Policy(environment=("LC_*",)))
    assert narrow["process"]["environ"] == {"LC_ALL": "C"}


def test_redact_does_not_touch_the_input():
    r = report(ENV, ["prog", "--password=hunter2"])
    redact.apply(r, DEFAULT)
    assert r["process"]["environ"] == ENV and r["process"]["cmdline"][1] == "--password=hunter2"


def test_redact_cmdline_default_pattern():
    args = ["prog", "--password=hunter2", "-api-key=abc", "--token=x=y", "--name=bob",
            "positional", "--auth-file=/etc/f"]
    out = redact.apply(report(cmdline=args), DEFAULT)["process"]["cmdline"]
    assert out == ["prog", "--password=<redacted>", "-api-key=<redacted>", "--token=<redacted>",
                   "--name=bob", "positional", "--auth-file=<redacted>"]


def test_redact_cmdline_custom_patterns():
    policy = redact.Policy(cmdline=(re.compile(r"postgres://\S+"),
                                    re.compile(r"^(?P<secret>\d{16})$")))
    out = redact.apply(report(cmdline=["psql", "postgres://u:p@h/db", "4111111111111111"]),
                       policy)["process"]["cmdline"]
    assert out == ["psql", "<redacted>", "<redacted>"]


def test_redact_scrubs_log_events():
    event = redact.scrub_event(None, "info", {"event": "x", "token": "t", "sink": "http"})
    assert event == {"event": "x", "token": "<redacted>", "sink": "http"}
