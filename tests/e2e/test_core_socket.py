"""Socket mode: core_pattern '@SOCKET' and `collector serve`, through the
real kernel (Linux 6.16+): the crashing task identified by its peer
credentials, a crash storm handled at most --jobs at a time, and socket
activation as systemd does it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .corepattern import (can_own, crash, crashed_thread, owned_core_pattern, short_tempdir,
                          wait_report)
from .helpers import assert_chain, collector_argv, collector_env, fmt_thread, names
from .receivers import stop

pytestmark = pytest.mark.skipif(can_own() is not None, reason=str(can_own()))


def kernel_has_socket_mode() -> bool:
    return tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2]) >= (6, 16)


def socket_activate(*listen, names: str | None = None) -> list[str]:
    """systemd-socket-activate listening at `listen`, passing on the
    collector's environment (it passes none of its own: the collector would
    use the machine's configuration and state)."""
    env = collector_env()
    keep = [f"-E{k}={env[k]}" for k in ("COLLECTOR_CONFIG", "COLLECTOR_CONTROL", "PYTHONPATH")
            if k in env]
    return ["systemd-socket-activate", *(f"-l{p}" for p in listen), *keep,
            *([f"--fdname={names}"] if names else [])]


@pytest.fixture
def server():
    """start(*args, activate=False) -> (socket path, report dir, Popen)."""
    if not kernel_has_socket_mode():
        pytest.skip("core_pattern '@socket' needs Linux 6.16+")
    d = short_tempdir()
    started = []

    def start(*args, activate: bool = False):
        sock, reports = d / "s", d / "r"
        reports.mkdir(mode=0o700)
        argv = collector_argv("serve", "--report-dir", reports, *args)
        if activate:
            argv = [*socket_activate(sock), *argv]
        else:
            argv += ["--socket", sock]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=collector_env(), text=True, start_new_session=True)
        started.append(proc)
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the server did not create its socket"
            time.sleep(0.05)
        return sock, reports, proc

    yield start
    for proc in started:
        stop(proc)
    shutil.rmtree(d, ignore_errors=True)


def test_segv_through_the_socket(builder, server):
    exe = builder.build("core_crash.c")
    sock, reports, proc = server()
    with owned_core_pattern(f"@{sock}"):
        pid = crash([exe, "segv", 16])
        report, = wait_report(reports, [pid])
    assert report["process"]["pid"] == pid and report["source"] == "core"
    assert report["signal"]["name"] == "SIGSEGV" and report["signal"]["si_addr"] == 0x10
    assert report["core"]["bytes"] == report["core"]["expected_bytes"]
    bad = crashed_thread(report)
    assert bad["name"] == "crasher" and names(bad)[:3] == ["boom", "e", "d"], fmt_thread(bad)
    assert_chain(report["threads"][0], ["park", "c", "b", "a", "main"], max_above=1)
    assert proc.poll() is None, "the server keeps serving"


def test_512_mib_process_through_the_socket(builder, server):
    exe = builder.build("core_crash.c")
    sock, reports, _ = server()
    with owned_core_pattern(f"@{sock}"):
        pid = crash([exe, "big", 512])
        report, = wait_report(reports, [pid])
    core = report["core"]
    assert core["bytes"] == core["expected_bytes"] >= 512 << 20 and core["kept_bytes"] <= 8 << 20
    assert_chain(crashed_thread(report), ["boom", "e", "d", "main"], max_above=0)


def test_crash_storm_is_bounded(builder, server):
    """Eight crashes at once, served with --jobs 2: every core becomes a
    report, and never more than two handlers run at a time."""
    exe = builder.build("core_crash.c", "O0-fp")  # -O2 moves abort() into boom.cold
    sock, reports, proc = server("--jobs", "2")
    with owned_core_pattern(f"@{sock}"):
        with ThreadPoolExecutor(8) as pool:
            pids = list(pool.map(lambda _: crash([exe, "abort"]), range(8)))
        found = wait_report(reports, pids)
    assert sorted(r["process"]["pid"] for r in found) == sorted(pids)
    for r in found:
        assert r["signal"]["name"] == "SIGABRT" and r["errors"] == [], r["errors"]
        assert_chain(crashed_thread(r), ["boom", "e", "d", "main"], max_above=4)
    stop(proc)
    log = proc.stderr.read()
    busy = [int(n) for n in re.findall(r"handling a core \((\d+) busy\)", log)]
    assert len(busy) >= 8 and max(busy) <= 2, log


def test_socket_activation(builder, server):
    """As under collector-core.socket: the listening socket arrives as fd 3."""
    exe = builder.build("core_crash.c", "O0-fp")
    sock, reports, proc = server(activate=True)
    with owned_core_pattern(f"@{sock}"):
        pid = crash([exe, "abort"])
        report, = wait_report(reports, [pid])
    assert report["process"]["pid"] == pid
    assert_chain(crashed_thread(report), ["boom", "e", "d", "main"], max_above=4)
