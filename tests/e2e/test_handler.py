"""`collector install-handler` / `uninstall-handler`: core_pattern set and
then restored exactly (byte for byte, with core_pipe_limit), a crash
reported through the installed handler, refusals that leave everything as
it was."""
from __future__ import annotations

import shutil
import sysconfig

import pytest

from .corepattern import (CORE_PATTERN, CORE_PIPE_LIMIT, can_own, crash, crashed_thread,
                          handler_script, owned_core_pattern, short_tempdir, wait_report)
from collector.commands.install_handler import entry_script
from collector.service.pipe import KERNEL_ARGS

from .helpers import assert_chain, collector_argv, run_command

pytestmark = pytest.mark.skipif(can_own() is not None, reason=str(can_own()))
ODD = "/tmp/odd core.%p.%e  two  spaces"   # a previous value that must come back as is


@pytest.fixture
def d():
    path = short_tempdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def collector(*args, user=None, catalog=None):
    """The collector; install-handler puts the journal catalog in `catalog`
    (default: a directory beside the state dir, not the system's)."""
    if args[0] == "install-handler":
        state = args[args.index("--state-dir") + 1]
        args = (*args, "--catalog-dir", catalog or f"{state}.catalog")
    argv = collector_argv(*args)
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return run_command(argv)


def current() -> tuple[str, str]:
    return CORE_PATTERN.read_text(), CORE_PIPE_LIMIT.read_text()


def test_install_crash_uninstall(builder, d):
    exe = builder.build("core_crash.c", "O0-fp")
    state, reports = d / "state", d / "r"
    with owned_core_pattern(ODD, pipe_limit=0):
        before = current()
        r = collector("install-handler", "--command", handler_script(d), "--report-dir", reports,
                      "--state-dir", state)
        assert r.rc == 0, str(r)
        pattern = CORE_PATTERN.read_text().rstrip("\n")
        assert pattern.startswith(f"|{handler_script(d)} core --from-kernel"), pattern
        assert int(CORE_PIPE_LIMIT.read_text()) > 0
        # installing again keeps the first saved value, not our own pattern
        assert collector("install-handler", "--command", handler_script(d), "--report-dir",
                         reports, "--state-dir", state).rc == 0
        pid = crash([exe, "abort"])
        report, = wait_report(reports, [pid])
        assert report["process"]["pid"] == pid
        assert_chain(crashed_thread(report), ["boom", "e", "d", "main"], max_above=4)
        catalog = d / "state.catalog" / "collector.catalog"
        assert "240e15496e22413d9aad847ae5229b41" in catalog.read_text()
        r = collector("uninstall-handler", "--state-dir", state)
        assert r.rc == 0, str(r)
        assert current() == before
        assert not list(state.iterdir()), "the saved state is removed"
        assert not catalog.exists(), "the catalog install-handler wrote is removed"
        r = collector("uninstall-handler", "--state-dir", state)
        assert r.rc == 11 and r.stderr.count("\n") == 1, str(r)


def test_the_entry_script_under_the_kernel(builder, d):
    """The script install-handler has the kernel run by default, as `python
    -I -S` runs it (behind the tests' filter of other programs' crashes,
    which also keeps the handler's state in `d`): a report, from the
    collector installed in the site directory the script adds."""
    exe = builder.build("core_crash.c", "O0-fp")
    entry, reports = d / "pipe-handler.py", d / "r"
    entry.write_text(entry_script(["core", "--from-kernel", "--report-dir", str(reports)],
                                  str(d / "pipe-settings"), [sysconfig.get_paths()["purelib"]]))
    script = handler_script(d)
    script.write_text(script.read_text().replace("-m collector", f"-I -S {entry}"))
    with owned_core_pattern(f"|{script} {KERNEL_ARGS}", pipe_limit=4):
        pid = crash([exe, "abort"])
        report, = wait_report(reports, [pid])
    assert report["process"]["pid"] == pid and report["signal"]["name"] == "SIGABRT"
    assert_chain(crashed_thread(report), ["boom", "e", "d", "main"], max_above=4)


def test_uninstall_leaves_a_later_change_alone(d):
    with owned_core_pattern("core"):
        assert collector("install-handler", "--command", handler_script(d),
                         "--state-dir", d / "state").rc == 0
        CORE_PATTERN.write_text("someone-else.%p")
        r = collector("uninstall-handler", "--state-dir", d / "state")
        assert r.rc == 11 and "changed since install" in r.stderr, str(r)
        assert CORE_PATTERN.read_text() == "someone-else.%p\n"


def test_refused_when_not_root(d):
    d.chmod(0o755)
    with owned_core_pattern("core"):
        before = current()
        r = collector("install-handler", "--command", handler_script(d),
                      "--state-dir", d / "state", user=65534)
        assert r.rc == 11 and "root" in r.stderr and r.stderr.count("\n") == 1, str(r)
        assert current() == before


def test_socket_mode_needs_a_listener(d):
    with owned_core_pattern("core"):
        r = collector("install-handler", "--mode", "socket", "--socket", d / "nothing",
                      "--state-dir", d / "state")
        assert r.rc == 11 and "nothing listens" in r.stderr, str(r)
        assert CORE_PATTERN.read_text() == "core\n"
