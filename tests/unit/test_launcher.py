"""The installed `collector` command is bin/collector, not a console
script: pip's wrapper would import re, and `python -m` runpy, before
`attach` stops its first thread (issue 13's first-stop target)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "bin" / "collector"


def test_the_installed_command_is_the_launcher():
    """pip installs it beside the interpreter with only its first line
    made this interpreter's (the suite's venv has `pip install .` done)."""
    installed = Path(sys.executable).parent / "collector"
    first, _, body = installed.read_text().partition("\n")
    assert first == f"#!{sys.executable}" or Path(first[2:]).resolve() == Path(sys.executable).resolve()
    assert body == LAUNCHER.read_text().partition("\n")[2]


def test_nothing_but_the_collector_is_imported_before_its_main():
    """Up to collector.__main__, the launcher imports nothing the
    interpreter's own start-up has not (no re, runpy, collections)."""
    r = subprocess.run([sys.executable, "-X", "importtime", str(LAUNCHER), "--version"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    names = [line.split("|")[-1].strip() for line in r.stderr.splitlines()
             if line.startswith("import time:") and "|" in line][1:]
    before = names[:names.index("collector.__main__")]
    baseline = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"],
                              capture_output=True, text=True, timeout=60).stderr
    started = {line.split("|")[-1].strip() for line in baseline.splitlines()}
    assert [n for n in before if n not in started and n != "collector"] == []
