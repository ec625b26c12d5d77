"""Shared pytest fixtures: C fixture programs built at test time, started and
always reaped, and a runner for the collector command.

Everything is located relative to this file, so the suite works from a clean
clone whether or not `pip install .` was done: the collector is run as
`python bin/collector` (the installed command's own script) with PYTHONPATH
set to the repository root.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SCHEMA_PATH = REPO / "collector" / "schema" / "report-v1.json"

# No tool in the tests (eu-stack, gdb, the collector) may reach for a
# debuginfod server the machine's profile names: there is no network here,
# and a test that wants one starts its own and says so.
os.environ.pop("DEBUGINFOD_URLS", None)

COLLECTOR_TIMEOUT = 60.0  # a hung collector fails its test, never the suite
NOBODY = 65534

# Build variants of the fixture programs. All are built with -pthread.
# "stripped" runs `strip -s` on the result; "static" links with -static.


@dataclass(frozen=True)
class Variant:
    name: str
    cflags: tuple[str, ...]
    strip: bool = False
    static: bool = False


VARIANTS = {
    v.name: v
    for v in (
        Variant("O0-fp", ("-O0", "-fno-omit-frame-pointer")),
        Variant("O2-nofp", ("-O2", "-fomit-frame-pointer")),
        Variant("pie", ("-O2", "-fPIE", "-pie")),
        Variant("nopie", ("-O2", "-fno-pie", "-no-pie")),
        Variant("stripped", ("-O2",), strip=True),
        Variant("static", ("-O2", "-static"), static=True),
    )
}
DEFAULT_VARIANT = "O2-nofp"


def _run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


class Builder:
    """Compiles fixture sources into a session temp dir, cached by
    (source, flags, strip)."""

    def __init__(self, outdir: Path):
        self.outdir = outdir
        self._cache: dict[tuple, Path] = {}
        self._lock = threading.Lock()
        self._static_ok: bool | None = None

    def static_available(self) -> bool:
        if self._static_ok is None:
            src = self.outdir / "static_probe.c"
            src.write_text("#include <pthread.h>\nint main(void){return 0;}\n")
            r = _run(["gcc", "-static", "-pthread", str(src), "-o", str(self.outdir / "static_probe")])
            self._static_ok = r.returncode == 0
        return self._static_ok

    def build(self, source: str, variant: str | Variant = DEFAULT_VARIANT,
              extra: tuple[str, ...] = (), shared: bool = False) -> Path:
        v = VARIANTS[variant] if isinstance(variant, str) else variant
        if v.static and not self.static_available():
            pytest.skip("static libc (libc.a) is not installed: cannot build -static fixtures "
                        "(apt-get install libc6-dev)")
        src = FIXTURES / source
        flags = ("-pthread", "-g0", *v.cflags)
        if shared:
            flags += ("-shared", "-fPIC")
        key = (source, src.stat().st_mtime_ns, flags, tuple(extra), v.strip)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            digest = hashlib.sha1(repr(key).encode()).hexdigest()[:10]
            stem = Path(source).stem
            name = f"lib{stem}.so" if shared else f"{stem}-{v.name}-{digest}"
            out = self.outdir / (digest if shared else "") / name
            out.parent.mkdir(parents=True, exist_ok=True)
            argv = ["gcc", *flags, "-I", str(FIXTURES), str(src), "-o", str(out), *extra]
            r = _run(argv)
            if r.returncode != 0:
                pytest.fail(f"fixture build failed: {' '.join(argv)}\n{r.stderr}")
            if v.strip:
                r = _run(["strip", "-s", str(out)])
                if r.returncode != 0:
                    pytest.fail(f"strip failed: {r.stderr}")
            self._cache[key] = out
            return out

    def build_plt(self, variant: str = DEFAULT_VARIANT) -> Path:
        """plt.c linked against libpltlib.so (rpath set to its directory)."""
        lib = self.build("pltlib.c", "O2-nofp", shared=True)
        return self.build("plt.c", variant,
                          extra=("-L", str(lib.parent), "-lpltlib", f"-Wl,-rpath,{lib.parent}"))


@pytest.fixture(scope="session")
def builder(tmp_path_factory) -> Builder:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (apt-get install gcc)")
    return Builder(tmp_path_factory.mktemp("fixtures"))


# ---------------------------------------------------------------- targets


def read_status(pid: int, tid: int | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def proc_state(pid: int, tid: int | None = None) -> str:
    """One-letter state from /proc/PID[/task/TID]/stat."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        data = f.read()
    return data[data.rindex(")") + 2]


def task_ids(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def task_syscall(pid: int, tid: int) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            return f.read().split()[0]
    except (OSError, IndexError):
        return "?"


class Target:
    """A running fixture process. Its stdout is read by a background thread
    into timestamped lines (stderr is merged into it)."""

    def __init__(self, argv: list[str], user: int | None = None):
        self.argv = argv
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        self.exe = self.argv[0]
        self.lines: list[tuple[float, str]] = []
        self._cv = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._cv:
                self.lines.append((time.monotonic(), line))
                self._cv.notify_all()
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    def wait_line(self, pattern: str, timeout: float = 10.0, after: float = 0.0) -> re.Match:
        """The first line (received after monotonic time `after`) that fully
        matches `pattern`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for t, line in self.lines:
                    if t >= after:
                        m = rx.fullmatch(line)
                        if m:
                            return m
                if self._eof:
                    raise AssertionError(
                        f"fixture {self.argv} exited (rc={self.proc.poll()}) before printing "
                        f"{pattern!r}; output: {[l for _, l in self.lines][-20:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"fixture {self.argv} did not print {pattern!r} within {timeout}s; "
                        f"output: {[l for _, l in self.lines][-20:]}")
                self._cv.wait(left)

    def output(self) -> list[str]:
        with self._cv:
            return [l for _, l in self.lines]

    def tids(self) -> list[int]:
        return task_ids(self.pid)

    def wait_parked(self, syscalls=("34",), threads: str = "all", timeout: float = 10.0):
        """Wait until every thread ("all") or every thread but the main one
        ("others") is asleep in one of `syscalls` (34 = pause)."""
        deadline = time.monotonic() + timeout
        while True:
            pending = []
            for tid in self.tids():
                if threads == "others" and tid == self.pid:
                    continue
                nr = task_syscall(self.pid, tid)
                try:
                    st = proc_state(self.pid, tid)
                except OSError:
                    continue
                if nr not in syscalls or st != "S":
                    pending.append((tid, st, nr))
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"threads not parked after {timeout}s: {pending}")
            time.sleep(0.01)

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def spawn():
    """spawn(exe, *args, ready=True, parked="all"|"others"|None) -> Target.

    Waits for the fixture's "ready" line and, if `parked` is set, for its
    threads to be asleep in pause(2). Every process started is killed and
    reaped at teardown, whatever the test did."""
    started: list[Target] = []

    def _spawn(exe, *args, ready: bool = True, parked: str | None = "all",
               syscalls=("34",), user: int | None = None, timeout: float = 15.0) -> Target:
        t = Target([str(exe), *map(str, args)], user=user)
        started.append(t)
        if ready:
            t.wait_line("ready", timeout=timeout)
        if parked:
            t.wait_parked(syscalls=syscalls, threads=parked, timeout=timeout)
        return t

    yield _spawn
    for t in started:
        t.kill()


@pytest.fixture
def world_dir():
    """A temp dir any user can enter (for binaries run as nobody)."""
    d = tempfile.mkdtemp(prefix="collector-e2e-")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- collector


@dataclass
class Result:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    wall_s: float
    report: dict | None = None  # parsed JSON report (rc 0, --format json)
    text: str | None = None     # stdout for --format text

    def __str__(self):
        return (f"$ {' '.join(self.argv)}\nrc={self.rc} wall={self.wall_s:.2f}s\n"
                f"--- stderr ---\n{self.stderr[-3000:]}\n--- stdout (head) ---\n{self.stdout[:3000]}")


# State (storm buckets, spool) and configuration of this test session only:
# never the machine's /etc/collector or /var/lib/collector.
SESSION_DIR = Path(tempfile.mkdtemp(prefix="collector-tests-"))
SESSION_DIR.chmod(0o755)  # tests also run the collector as user nobody
SESSION_CONFIG = SESSION_DIR / "collector.toml"  # a test's own --config replaces it whole
SESSION_CONFIG.write_text(f'[collector]\nstate_dir = "{SESSION_DIR}/state"\n'
                          f'[spool]\ndir = "{SESSION_DIR}/spool"\n')
# also for the collectors that benches run on the tests' behalf with this environment
os.environ.setdefault("COLLECTOR_CONFIG", str(SESSION_CONFIG))
# no attach goes through a service the machine runs; a test's service listens here
SESSION_CONTROL = SESSION_DIR / "control.sock"
os.environ.setdefault("COLLECTOR_CONTROL", str(SESSION_CONTROL))


def collector_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONSTARTUP", None)
    env.setdefault("COLLECTOR_CONFIG", str(SESSION_CONFIG))
    return env


@pytest.fixture(scope="session", autouse=True)
def _session_dir():
    yield SESSION_DIR
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


def collector_argv(*args) -> list[str]:
    return [sys.executable, str(REPO / "bin" / "collector"), *map(str, args)]


_validator = None


def schema_validator():
    global _validator
    if _validator is None:
        import jsonschema
        schema = json.loads(SCHEMA_PATH.read_text())
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return _validator


def schema_errors(report: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in schema_validator().iter_errors(report)]


def run_command(argv: list[str], timeout: float = COLLECTOR_TIMEOUT, env=None) -> Result:
    """Run a collector command line; a hang fails the test (after killing
    the collector), a Python traceback on stderr fails it always, a JSON
    report is parsed and validated against the shipped schema."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env or collector_env(),
                            cwd=tempfile.gettempdir(), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"collector did not finish within {timeout}s: {' '.join(argv)}\n"
                    f"stderr: {err.decode(errors='replace')[-2000:]}")
    res = Result(argv=argv, rc=proc.returncode, stdout=out.decode(errors="replace"),
                 stderr=err.decode(errors="replace"), wall_s=time.monotonic() - t0)
    assert "Traceback" not in res.stderr, f"the collector printed a traceback\n{res}"
    fmt = "json"
    if "--format" in argv:
        fmt = argv[argv.index("--format") + 1]
    if res.rc == 0 and fmt == "json" and "attach" in argv and "--help" not in argv:
        try:
            res.report = json.loads(res.stdout)
        except ValueError as e:
            pytest.fail(f"stdout is not one JSON document ({e})\n{res}")
        errs = schema_errors(res.report)
        if errs:
            threads = [f"tid {t.get('tid')}: {len(t.get('frames') or [])} frames, "
                       f"error={t.get('error')!r}" for t in res.report.get("threads", [])[:10]]
            raise AssertionError(
                f"report does not validate against report-v1.json ({len(errs)} errors):\n"
                + "\n".join(errs[:12]) + "\nthreads:\n" + "\n".join(threads)
                + f"\nerrors: {res.report.get('errors')}")
    elif res.rc == 0 and fmt == "text":
        res.text = res.stdout
    return res


@pytest.fixture
def collector():
    """collector(*args, timeout=60) -> Result for `collector ARGS`."""
    def _collector(*args, timeout: float = COLLECTOR_TIMEOUT) -> Result:
        return run_command(collector_argv(*args), timeout=timeout)
    return _collector
