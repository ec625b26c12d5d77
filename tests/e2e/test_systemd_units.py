"""systemd/: the units pass `systemd-analyze verify` (and a broken copy does
not, so the check can fail), the service is sandboxed as documented, the
tmpfiles.d entry creates the directories with tight modes, and the sysctl.d
snippet's core_pattern fits the kernel and parses as a collector command."""
from __future__ import annotations

import configparser
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from collector.cli import parser
from collector.service.pipe import KERNEL_ARGS

from .helpers import REPO

UNITS = REPO / "systemd"
INSTALLED = "/usr/local/bin/collector"

need_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                  reason="systemd-analyze is missing (apt-get install systemd)")


def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read(UNITS / name)
    return cp


def copies(tmp_path: Path, collector: Path) -> list[Path]:
    """The units with ExecStart pointing at a collector that exists here
    (verify checks that the program exists)."""
    out = []
    for src in sorted(UNITS.glob("*.s*")):
        if src.suffix in (".socket", ".service"):
            dst = tmp_path / src.name
            dst.write_text(src.read_text().replace(INSTALLED, str(collector)))
            out.append(dst)
    return out


def verify(paths) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, paths)],
                          capture_output=True, text=True, timeout=60)


@need_systemd
def test_units_verify(tmp_path):
    script = tmp_path / "collector"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    paths = copies(tmp_path, script)
    assert {p.suffix for p in paths} == {".socket", ".service"}
    r = verify(paths)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    service = next(p for p in paths if p.suffix == ".service")
    service.write_text(service.read_text().replace("ProtectSystem=strict", "ProtectSystem=bogus")
                       .replace("Type=simple", "Type=nonsense"))
    broken = verify(paths)  # warnings only (rc 0): a clean run is an empty stderr
    assert "nonsense" in broken.stderr and "bogus" in broken.stderr, broken.stderr


def test_service_is_sandboxed():
    s = unit("collector-core.service")["Service"]
    assert s["ProtectSystem"] == "strict" and s["ProtectHome"] == "read-only"
    assert s["PrivateTmp"] == "yes" and s["NoNewPrivileges"] == "yes"
    assert s["MemoryMax"].endswith(("M", "G"))
    assert s["StateDirectory"] == "collector" and s["ReadWritePaths"] == "/var/spool/collector"
    args = parser().parse_args(shlex.split(s["ExecStart"])[1:])
    assert args.command == "serve" and args.socket is None, "the socket comes from the unit"
    sock = unit("collector-core.socket")["Socket"]
    assert sock["SocketMode"] == "0600" and sock["Accept"] == "no"


def test_sysctl_snippet():
    values = {}
    for line in (UNITS / "60-collector-core.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    pattern = values["kernel.core_pattern"]
    assert len(pattern) <= 127, "the kernel keeps 127 bytes of core_pattern"
    assert pattern.startswith("|") and pattern.endswith(KERNEL_ARGS)
    argv = shlex.split(pattern[1:])
    assert argv[0] == INSTALLED
    args = parser().parse_args(argv[1:])
    assert args.command == "core" and args.from_kernel
    assert int(values["kernel.core_pipe_limit"]) > 0


@pytest.mark.skipif(shutil.which("systemd-tmpfiles") is None, reason="systemd-tmpfiles is missing")
def test_tmpfiles(tmp_path):
    r = subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create",
                        str(UNITS / "collector.tmpfiles.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for d in ("var/lib/collector", "var/lib/collector/reports", "var/spool/collector"):
        mode = (tmp_path / d).stat().st_mode
        assert stat.S_ISDIR(mode) and stat.S_IMODE(mode) == 0o700, (d, oct(mode))
