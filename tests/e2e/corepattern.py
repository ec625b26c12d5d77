"""Owning the kernel's core handler for a test: one test at a time (a file
lock, also against other suites on this machine), core_pattern and
core_pipe_limit restored in all cases, and crashing fixtures with a core
limit set in the child only."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .helpers import REPO, schema_errors

CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")
CORE_PIPE_LIMIT = Path("/proc/sys/kernel/core_pipe_limit")
LOCK = Path(tempfile.gettempdir()) / "collector-core-pattern.lock"
FIXTURE_EXE = "core_crash"  # tests/fixtures/core_crash.c, built as core_crash-VARIANT-HASH
# in every crashing fixture's environment: no report may carry it
CRASH_ENV = {"FIXTURE_API_TOKEN": "s3cr3t-b4d-v4lu3"}


def can_own() -> str | None:
    """Why this process cannot change core_pattern, or None."""
    if os.geteuid() != 0:
        return "needs root to set core_pattern"
    if not os.access(CORE_PATTERN, os.W_OK):
        return "core_pattern is not writable here"
    return None


@contextlib.contextmanager
def core_lock():
    with open(LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def owned_core_pattern(pattern: str | None = None, pipe_limit: int | None = None):
    """Hold the lock; set core_pattern (if given) and core_pipe_limit; put
    both back exactly afterwards."""
    with core_lock():
        old_pattern = CORE_PATTERN.read_text()
        old_limit = CORE_PIPE_LIMIT.read_text()
        try:
            if pattern is not None:
                CORE_PATTERN.write_text(pattern)
            if pipe_limit is not None:
                CORE_PIPE_LIMIT.write_text(str(pipe_limit))
            yield
        finally:
            CORE_PATTERN.write_text(old_pattern)
            CORE_PIPE_LIMIT.write_text(old_limit)


def handler_script(directory: Path, env: dict | None = None, args: str = "") -> Path:
    """A `collector` for the kernel to start: the kernel gives a handler no
    environment, so the script sets PYTHONPATH to this checkout, a state
    directory and spool in `directory` (never the machine's), `env`, and
    `args` after the kernel's.
    Crashes of other programs on the machine (other suites' fixtures) while a
    test owns core_pattern are drained by `cat` instead (told apart by
    /proc/%P/exe)."""
    path = directory / "c"
    env = {"COLLECTOR_STATE_DIR": directory / "handler-state",
           "COLLECTOR_SPOOL_DIR": directory / "handler-spool",
           "COLLECTOR_CONTROL": directory / "control.sock",  # a test's own service, if any
           **(env or {})}
    exports = "".join(f"export {k}='{v}'\n" for k, v in env.items())
    path.write_text(f"""#!/bin/sh
for a; do case $a in P=*) pid=${{a#P=}} ;; esac; done
case $(readlink /proc/$pid/exe) in */{FIXTURE_EXE}-*) ;; *) exec cat >/dev/null ;; esac
{exports}PYTHONPATH={REPO} exec {sys.executable} -m collector "$@" {args}
""")
    path.chmod(0o755)
    return path


def short_tempdir() -> Path:
    """core_pattern holds at most 127 bytes: keep the handler path short."""
    d = Path(tempfile.mkdtemp(prefix="cc-", dir="/tmp"))
    d.chmod(0o755)
    return d


def _core_limit():
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def crash(argv: list, timeout: float = 60.0) -> int:
    """Run a fixture that crashes (core limit unlimited in the child only)
    and return its pid once it has died, which is after its core was written."""
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=_core_limit,
                            cwd=tempfile.gettempdir(), env=dict(os.environ, **CRASH_ENV))
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode < 0, f"fixture did not die of a signal: rc={proc.returncode} {err}"
    return proc.pid


def wait_report(directory: Path, pids: list, timeout: float = 60.0,
                key=lambda report: report["process"]["pid"]) -> list[dict]:
    """The reports on `pids` (in that order; or other `key` values) that a
    handler writes into `directory` (atomically, so a *.json file is
    complete), validated against the schema. Reports on other processes are
    ignored: while a test owns core_pattern, any crash on the machine comes
    to its handler."""
    deadline = time.monotonic() + timeout
    found: dict[int, dict] = {}
    seen: set[Path] = set()
    while True:
        for path in set(directory.glob("*.json")) - seen:
            seen.add(path)
            report = json.loads(path.read_text())
            if key(report) in pids:
                assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
                errs = schema_errors(report)
                assert not errs, "report does not validate:\n" + "\n".join(errs[:20])
                found[key(report)] = report
        if len(found) == len(set(pids)):
            return [found[pid] for pid in pids]
        assert time.monotonic() < deadline, (
            f"no report on {sorted(set(pids) - set(found))} in {directory} after {timeout}s")
        time.sleep(0.05)


def crashed_thread(report: dict) -> dict:
    marked = [t for t in report["threads"] if t.get("crashed")]
    assert len(marked) == 1, f"expected one crashed thread, got {[t['tid'] for t in marked]}"
    return marked[0]
