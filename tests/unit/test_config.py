"""The configuration file: defaults, the shipped example, overrides, and
errors that name the file, line and key."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector import config
from collector.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "collector" / "collector.example.toml"


def load(tmp_path, text, *sets, env=None):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return config.load(str(p), sets, env=env or {})


def error(tmp_path, text, *sets) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text, *sets)
    return str(e.value)


def test_config_example_is_the_defaults():
    """The shipped, commented example documents exactly the built-in defaults."""
    shipped = config.load(str(EXAMPLE), env={})
    builtin = config.load(None, env={"COLLECTOR_CONFIG": ""})  # no file at all
    if builtin.path is not None:
        pytest.skip(f"{config.DEFAULT_PATH} exists on this machine")
    assert shipped.sections == builtin.sections
    assert shipped.sinks == builtin.sinks == [{"type": "stdout", "name": "stdout",
                                               "format": "json"}]


def test_config_sinks_get_defaults_and_names(tmp_path):
    c = load(tmp_path, '[[sink]]\ntype = "file"\npath = "/tmp/x"\n'
                       '[[sink]]\ntype = "http"\nname = "loki"\nurl = "https://h/p"\n'
                       '[[sink]]\ntype = "http"\nurl = "http://h:1/"\nflavour = "journal-remote"\n')
    assert [s["name"] for s in c.sinks] == ["file", "loki", "http"]
    assert c.sinks[0]["mode"] == 0o600 and c.sinks[0]["max_bytes"] == 10 << 20
    assert c.sinks[1]["verify"] is True


@pytest.mark.parametrize("text, line, key", [
    ("[storm]\nburst = 3\nbursty = 4\n", 3, "storm.bursty"),
    ("[storm]\nburst = \"many\"\n", 2, "storm.burst"),
    ("[spool]\nmax_bytes = \"lots\"\n", 2, "spool.max_bytes"),
    ("[log]\nlevel = \"loud\"\n", 2, "log.level"),
    ("[[sink]]\ntype = \"stdout\"\n\n[[sink]]\ntype = \"http\"\nurl = \"http://h/\"\n"
     "timeout = \"slow\"\n", 7, "sink[1].timeout"),
    ("[[sink]]\ntype = \"file\"\npath = \"/x\"\nmode = 0o644\n", 4, "sink[0].mode"),
    ("[[sink]]\ntype = \"syslog\"\naddress = \"udp://nowhere\"\n", 3, "sink[0].address"),
    ("[[sink]]\ntype = \"file\"\n", 1, "sink[0].path"),
    ("[[sink]]\ntype = \"carrier-pigeon\"\n", 2, "sink[0].type"),
    ("[[sink]]\ntype = \"stdout\"\n[[sink]]\ntype = \"stdout\"\n", 3, "sink[1].name"),
    ("[redact]\ncmdline = [\"(unclosed\"]\n", 2, "redact.cmdline"),
    ("[nonsense]\nx = 1\n", 1, "nonsense"),
])
def test_config_error_names_key_and_line(tmp_path, text, line, key):
    msg = error(tmp_path, text)
    assert f"c.toml:{line}: {key}:" in msg, msg
    assert "\n" not in msg


def test_config_toml_syntax_error_has_line(tmp_path):
    msg = error(tmp_path, "[storm]\nburst = = 3\n")
    assert "c.toml" in msg and "line 2" in msg, msg


def test_config_overrides_env_then_set(tmp_path):
    c = load(tmp_path, "[storm]\nburst = 3\n[spool]\ndir = \"/from/file\"\n",
             "storm.burst=7", "log.level=info",
             env={"COLLECTOR_SPOOL_DIR": "/from/env", "COLLECTOR_STATE_DIR": "/st"})
    assert c["storm"]["burst"] == 7 and c["log"]["level"] == "info"
    assert c["spool"]["dir"] == "/from/env" and c["collector"]["state_dir"] == "/st"
    assert "storm.burst" in error(tmp_path, "", "storm.burst=-1")
    with pytest.raises(ConfigError, match="--set"):
        load(tmp_path, "", "nonsense")


def test_config_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(str(tmp_path / "absent.toml"), env={})
    with pytest.raises(ConfigError, match="no such file"):
        config.load(None, env={"COLLECTOR_CONFIG": str(tmp_path / "absent.toml")})


def test_config_error_on_the_command_line(tmp_path):
    """One line on stderr, exit code 12, no traceback, before anything else."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[spool]\nmax_reports = 10\nretry_after = \"soon\"\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for argv in (["--config", str(bad), "flush"], ["flush", "--config", str(bad)]):
        r = subprocess.run([sys.executable, "-m", "collector", *argv], capture_output=True,
                           text=True, env=env, timeout=60)
        assert r.returncode == 12, r
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"{bad}:3: spool.retry_after:" in r.stderr, r.stderr
