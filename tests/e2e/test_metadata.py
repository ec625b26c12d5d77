"""What operators group by: the package note of every module (as
systemd-coredump reads it) and the process's cgroup, systemd unit and
container, in the report."""
from __future__ import annotations

import json
import re
import subprocess

from collector.targets.procfs import cgroup_fields

from .helpers import assert_chain, collector_argv, run_command, same_path

HEX = "0123456789abcdef" * 4


def test_package_note_of_a_module(builder, spawn):
    exe = builder.build("package_note.c")
    shown = subprocess.run(["readelf", "-n", str(exe)], capture_output=True, text=True).stdout
    theirs = json.loads(re.search(r"Packaging Metadata: (\{.*\})", shown).group(1))
    target = spawn(exe)
    report = run_command(collector_argv("attach", target.pid)).report
    module, = [m for m in report["modules"] if same_path(m["path"], str(exe))]
    assert module["package"] == theirs == {"type": "deb", "name": "fixture", "version": "1.2-3",
                                           "architecture": "amd64", "os": "debian"}
    assert all("package" not in m for m in report["modules"] if m is not module
               and "[vdso]" in m["path"]), "only files that carry a note"
    assert_chain(report["threads"][0], ["park", "c", "b", "a", "main"], max_above=1)


def test_cgroup_of_a_live_process(builder, spawn):
    target = spawn(builder.build("chain.c"))
    report = run_command(collector_argv("attach", target.pid)).report
    with open(f"/proc/{target.pid}/cgroup") as f:
        path, = [line[3:] for line in f.read().splitlines() if line.startswith("0::")]
    assert report["process"]["cgroup"] == path


def test_units_slices_and_containers_from_cgroup_paths():
    assert cgroup_fields("0::/system.slice/nginx.service\n") == {
        "cgroup": "/system.slice/nginx.service", "unit": "nginx.service",
        "slice": "system.slice"}
    user = cgroup_fields("0::/user.slice/user-1000.slice/user@1000.service/app.slice/"
                         "app-gnome-foo-42.scope")
    assert (user["unit"], user["slice"], user["user_unit"]) == (
        "user@1000.service", "user-1000.slice", "app-gnome-foo-42.scope")
    docker = cgroup_fields(f"0::/system.slice/docker-{HEX}.scope")
    assert (docker["container_id"], docker["container_runtime"]) == (HEX, "docker")
    pod = cgroup_fields("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-"
                        f"pod1_2.slice/cri-containerd-{HEX}.scope")
    assert (pod["container_id"], pod["container_runtime"]) == (HEX, "kubernetes")
    podman = cgroup_fields(f"0::/machine.slice/libpod-{HEX}.scope/container")
    assert (podman["container_id"], podman["container_runtime"]) == (HEX, "podman")
    assert "container_id" not in cgroup_fields("0::/user.slice/user-0.slice/session-3.scope")
    bare = cgroup_fields(f"0::/lxc/{HEX}")
    assert bare["container_id"] == HEX and "container_runtime" not in bare
    for not_one in (f"foo-{HEX}.scope", f"-{HEX}", f"docker-{HEX}0", f"docker-{HEX.upper()}",
                    f"docker-{HEX}.scope.scope"):
        assert "container_id" not in cgroup_fields(f"0::/system.slice/{not_one}"), not_one
    assert cgroup_fields("") == {} and cgroup_fields("0::/") == {"cgroup": "/"}
    hybrid = cgroup_fields("12:pids:/\n1:name=systemd:/system.slice/x.service\n"
                           "0::/system.slice/x.service\n")
    assert hybrid["unit"] == "x.service"
