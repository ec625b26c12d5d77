"""The journal side of a crash: install-handler installs the catalog entry,
so `journalctl -x` explains a report the journald sink wrote (in the test's
own journald, a journal namespace), and `collector list --journal` /
`show --journal` read reports back from the journal when the store is off.
The system's catalog is restored whatever happens."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from .corepattern import (can_own, crash, handler_script, owned_core_pattern,
                          short_tempdir)
from .helpers import collector_argv, collector_env, run_command
from .receivers import config, journald

SYSTEM_CATALOG = "/usr/lib/systemd/catalog/collector.catalog"
MESSAGE_ID = "240e15496e22413d9aad847ae5229b41"

pytestmark = [pytest.mark.skipif(can_own() is not None, reason=str(can_own())),
              pytest.mark.skipif(shutil.which("journalctl") is None, reason="no journalctl")]


def listed_ids() -> str:
    return subprocess.run(["journalctl", "--list-catalog"], capture_output=True, text=True,
                          timeout=60).stdout


@pytest.fixture
def d():
    if os.path.exists(SYSTEM_CATALOG):
        pytest.skip(f"{SYSTEM_CATALOG} belongs to an installed collector")
    path = short_tempdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(SYSTEM_CATALOG):  # the test failed half way: put the system back
        os.unlink(SYSTEM_CATALOG)
        subprocess.run(["journalctl", "--update-catalog"], timeout=60)


def test_catalog_explains_a_crash_and_list_reads_the_journal(builder, d):
    exe = builder.build("core_crash.c")
    with journald() as ns, owned_core_pattern():
        cfg = config(d, {"type": "journald", "socket": ns.socket},
                     extra="[store]\nenabled = false\n")
        env = dict(collector_env(), COLLECTOR_CONFIG=str(cfg))
        handler = handler_script(d, {"COLLECTOR_CONFIG": cfg})
        r = run_command(collector_argv("install-handler", "--command", handler,
                                       "--state-dir", d / "installed"), env=env)
        assert r.rc == 0, str(r)
        assert MESSAGE_ID in listed_ids(), "the catalog is in journalctl's database"
        pid = crash([exe, "segv", 2])
        entry, = ns.wait_entries(1, f"MESSAGE_ID={MESSAGE_ID}", f"COLLECTOR_PID={pid}",
                                 timeout=60)
        shown = subprocess.run(["journalctl", f"--namespace={ns.name}", "-x", "--no-pager",
                                f"COLLECTOR_PID={pid}"], capture_output=True, text=True,
                               timeout=30).stdout
        assert f"Subject: {entry['COLLECTOR_EXE']} (pid {pid}): a crash report" in shown, shown
        assert f"collector list fingerprint={entry['COLLECTOR_FINGERPRINT']}" in shown, shown

        res = run_command(collector_argv("list", "--namespace", ns.name, "--json"), env=env)
        assert res.rc == 0, str(res)
        assert [row["pid"] for row in json.loads(res.stdout)] == [pid]
        res = run_command(collector_argv("show", "--journal", "--namespace", ns.name,
                                         str(pid)), env=env)
        assert res.rc == 0 and "Signal: 11 (SIGSEGV)" in res.stdout, str(res)
        assert "boom" in res.stdout, res.stdout

        r = run_command(collector_argv("uninstall-handler", "--state-dir", d / "installed"),
                        env=env)
        assert r.rc == 0, str(r)
    assert not os.path.exists(SYSTEM_CATALOG), "uninstall removes the catalog it installed"
    assert MESSAGE_ID not in listed_ids()
