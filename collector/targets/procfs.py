"""Reading /proc/PID: status letters, threads, names and the mapping list."""
from __future__ import annotations

import os

from unwinder.space import Mapping

PF_KTHREAD = 0x00200000


def stat_fields(pid: int, tid: int | None = None) -> list[str]:
    """Fields of /proc/PID[/task/TID]/stat after the command name (which may
    hold spaces and parentheses): [0] is the state letter, [1] ppid, [6] flags."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path, "rb") as f:
        raw = f.read()
    return raw[raw.rindex(b")") + 2:].decode().split()


def state(pid: int, tid: int | None = None) -> str | None:
    try:
        return stat_fields(pid, tid)[0]
    except (OSError, ValueError, IndexError):
        return None


def tids(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def comm(pid: int, tid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def status_field(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == name:
                    return value.strip()
    except OSError:
        pass
    return None


def maps(pid: int) -> list[Mapping]:
    with open(f"/proc/{pid}/maps") as f:
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
