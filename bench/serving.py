"""`collector serve` for a benchmark: run from this checkout, its stderr
in a log file, started once it says it listens."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def start_serve(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "collector", "serve", *args],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            env={**env, "PYTHONPATH": str(REPO)}, start_new_session=True)
    while "listening" not in log.read_text():
        if proc.poll() is not None:
            raise SystemExit(f"serve did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return proc
