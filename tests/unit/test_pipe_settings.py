"""The pipe handler's first step keeps the configuration's sections it
needs where the entry script says, and reads them back only while what
they were made of is unchanged: the file's bytes, the COLLECTOR_
environment, --config and --set."""
from __future__ import annotations

import pytest

from collector import config
from collector.service import pipe


@pytest.fixture
def kept(tmp_path, monkeypatch):
    """The config file, and a count of the full loads."""
    path = tmp_path / "collector.toml"
    path.write_text(f'[collector]\nstate_dir = "{tmp_path}/state"\n[storm]\nburst = 3\n')
    for name in [k for k in __import__("os").environ if k.startswith("COLLECTOR_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLLECTOR_CONFIG", str(path))
    monkeypatch.setattr(pipe, "settings_at", str(tmp_path / "pipe-settings"))
    loads = []
    real = config.load
    monkeypatch.setattr(config, "load", lambda *a, **k: loads.append(a) or real(*a, **k))
    return path, loads


def opts(*argv):
    return pipe._options(["core", "--from-kernel", *argv])


def test_kept_then_read_back(kept):
    path, loads = kept
    first = pipe.settings(opts())
    assert first["storm"]["burst"] == 3 and first["store"]["enabled"] is True
    assert set(first) == set(pipe.SECTIONS)
    assert pipe.settings(opts()) == first and len(loads) == 1


@pytest.mark.parametrize("change", ["file", "env", "set", "config"])
def test_loaded_again_when_its_sources_change(kept, monkeypatch, tmp_path, change):
    path, loads = kept
    pipe.settings(opts())
    argv = []
    if change == "file":
        path.write_text(path.read_text().replace("burst = 3", "burst = 4"))
    elif change == "env":
        monkeypatch.setenv("COLLECTOR_STATE_DIR", str(tmp_path / "other"))
    elif change == "set":
        argv = ["--set", "storm.burst=5"]
    else:
        other = tmp_path / "other.toml"
        other.write_text("[storm]\nburst = 6\n")
        argv = ["--config", str(other)]
    got = pipe.settings(opts(*argv))
    assert len(loads) == 2
    want = {"file": ("storm", "burst", 4), "env": ("collector", "state_dir", str(tmp_path / "other")),
            "set": ("storm", "burst", 5), "config": ("storm", "burst", 6)}[change]
    assert got[want[0]][want[1]] == want[2]
    assert pipe.settings(opts(*argv)) == got and len(loads) == 2  # kept again


def test_a_bad_configuration_is_left_to_the_command(kept):
    path, loads = kept
    pipe.settings(opts())
    path.write_text("[storm]\nburst = -1\n")
    assert pipe.settings(opts()) is None


def test_garbage_kept_is_loaded_over(kept, tmp_path):
    path, loads = kept
    (tmp_path / "pipe-settings").write_bytes(b"\x00garbage")
    assert pipe.settings(opts())["storm"]["burst"] == 3 and len(loads) == 1
    assert pipe.settings(opts())["storm"]["burst"] == 3 and len(loads) == 1


def test_nothing_kept_without_the_entry_script(kept, tmp_path, monkeypatch):
    path, loads = kept
    monkeypatch.setattr(pipe, "settings_at", None)
    pipe.settings(opts())
    pipe.settings(opts())
    assert len(loads) == 2 and not (tmp_path / "pipe-settings").exists()
