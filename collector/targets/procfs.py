"""Reading /proc/PID: status letters, threads, names and the mapping list.

Names and paths are the target's bytes, not always UTF-8: they are decoded
with surrogateescape, as Python decodes file names, so a path opens again
and the report shows the byte (JSON `\udcff`, text `\xff`)."""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from unwinder.space import Mapping

PF_KTHREAD = 0x00200000
_CONTAINER = re.compile(r"^(?:(docker|libpod|crio|cri-containerd)-)?([0-9a-f]{64})(?:\.scope)?$")
_RUNTIMES = {"docker": "docker", "libpod": "podman", "crio": "crio",
             "cri-containerd": "containerd"}
_UNIT_SUFFIXES = (".service", ".scope", ".socket", ".mount", ".swap", ".timer", ".path")


@dataclass
class ThreadInfo:
    tid: int
    name: str | None
    state: str | None          # the /proc state letter before the collector touched it
    error: str | None = None


def stat_fields(pid: int, tid: int | None = None) -> list[str]:
    """Fields of /proc/PID[/task/TID]/stat after the command name (which may
    hold spaces and parentheses): [0] is the state letter, [1] ppid, [6] flags."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path, "rb") as f:
        raw = f.read()
    return raw[raw.rindex(b")") + 2:].decode("ascii", "replace").split()


def state(pid: int, tid: int | None = None) -> str | None:
    try:
        return stat_fields(pid, tid)[0]
    except (OSError, ValueError, IndexError):
        return None


def tids(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def comm(pid: int, tid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm", errors="surrogateescape") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def new_threads(pid: int, done: Callable[[int], bool]) -> Iterator[list[int]]:
    """Batches of the process's threads that `done` does not know yet, the
    list read again after each batch is dealt with (threads are created
    meanwhile), until a listing has none; ends when the process is gone."""
    while True:
        try:
            fresh = [t for t in tids(pid) if not done(t)]
        except OSError:
            return
        if not fresh:
            return
        yield fresh


def cgroup_fields(text: str) -> dict[str, str]:
    """From /proc/PID/cgroup: the cgroup v2 path, the systemd unit, slice
    and user unit it names, and a container's id and runtime (docker,
    podman, kubernetes pods) as the last 64-hex component says."""
    lines = text.strip().split("\n")
    v2 = [line for line in lines if line.startswith("0::")]  # a hybrid system lists v1 too
    path = (v2 or lines)[-1].split(":", 2)[-1]
    if not path:
        return {}
    out = {"cgroup": path}
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        if part.endswith(_UNIT_SUFFIXES) and "unit" not in out:
            out["unit"] = part
            slices = [p for p in parts[:i] if p.endswith(".slice")]
            if slices:
                out["slice"] = slices[-1]
            if part.startswith("user@"):  # a user's service manager: its own units below
                inner = [p for p in parts[i + 1:] if p.endswith(_UNIT_SUFFIXES)]
                if inner:
                    out["user_unit"] = inner[-1]
    for part in reversed(parts):
        m = _CONTAINER.search(part)
        if m:
            out["container_id"] = m.group(2)
            runtime = "kubernetes" if "kubepods" in path else _RUNTIMES.get(m.group(1) or "")
            if runtime:
                out["container_runtime"] = runtime
            break
    return out


def cgroup(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return cgroup_fields(f.read())
    except OSError:
        return {}


def parse_status(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def status(pid: int, tid: int | None = None) -> dict[str, str]:
    """/proc/PID[/task/TID]/status as a dict; empty if it cannot be read."""
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    try:
        with open(path, errors="surrogateescape") as f:
            return parse_status(f.read())
    except OSError:
        return {}


def status_field(pid: int, name: str) -> str | None:
    return status(pid).get(name)


def maps(pid: int) -> list[Mapping]:
    with open(f"/proc/{pid}/maps", errors="surrogateescape") as f:
        return parse_maps(f.read())


def parse_maps(text: str) -> list[Mapping]:
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        start, _, end = parts[0].partition("-")
        path = parts[5] if len(parts) > 5 else ""
        out.append(Mapping(int(start, 16), int(end, 16), parts[1], int(parts[2], 16),
                           parts[3], int(parts[4]), path))
    return out
