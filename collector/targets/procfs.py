"""Reading /proc/PID: status letters, threads, names and the mapping list.

Names and paths are the target's bytes, not always UTF-8: they are decoded
with surrogateescape, as Python decodes file names, so a path opens again
and the report shows the byte (JSON `\udcff`, text `\xff`)."""
from __future__ import annotations

import os
from _collections_abc import Callable, Iterator  # collections.abc without collections (2 ms)

from unwinder.space import Mapping

PF_KTHREAD = 0x00200000
_RUNTIMES = {"docker": "docker", "libpod": "podman", "crio": "crio",
             "cri-containerd": "containerd"}
_HEX = frozenset("0123456789abcdef")
_UNIT_SUFFIXES = (".service", ".scope", ".socket", ".mount", ".swap", ".timer", ".path")


class ThreadInfo:
    """A plain class (see unwinder.space.Mapping): made before any stop."""
    __slots__ = ("tid", "name", "state", "error")

    def __init__(self, tid: int, name: str | None, state: str | None, error: str | None = None):
        self.tid = tid
        self.name = name
        self.state = state      # the /proc state letter before the collector touched it
        self.error = error

    def __repr__(self) -> str:
        return (f"ThreadInfo(tid={self.tid!r}, name={self.name!r}, state={self.state!r}, "
                f"error={self.error!r})")


# the words psutil gives for a state letter, as reports have always said them
STATE_WORDS = {"R": "running", "S": "sleeping", "D": "disk-sleep", "T": "stopped",
               "t": "tracing-stop", "Z": "zombie", "X": "dead", "x": "dead", "K": "wake-kill",
               "W": "waking", "I": "idle", "P": "parked"}


def _stat(pid: int, tid: int | None = None) -> bytes:
    """One read: the kernel makes the line at once, well under a page (and
    os.read costs two thirds of a buffered file's read, once per thread)."""
    fd = os.open(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat",
                 os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def stat_fields(pid: int, tid: int | None = None) -> list[str]:
    """Fields of /proc/PID[/task/TID]/stat after the command name (which may
    hold spaces and parentheses): [0] is the state letter, [1] ppid, [6] flags."""
    raw = _stat(pid, tid)
    return raw[raw.rindex(b")") + 2:].decode("ascii", "replace").split()


def thread(pid: int, tid: int) -> ThreadInfo:
    """A thread's name and state as found, from one read of its stat."""
    try:
        raw = _stat(pid, tid)
    except OSError:
        return ThreadInfo(tid, None, None)
    end = raw.rfind(b")")
    return ThreadInfo(tid, os.fsdecode(raw[raw.find(b"(") + 1:end]),
                      raw[end + 2:end + 3].decode("ascii", "replace") or None)


def stat_name(pid: int) -> str | None:
    """The command name of /proc/PID/stat (15 bytes at most)."""
    try:
        raw = _stat(pid)
    except OSError:
        return None
    return os.fsdecode(raw[raw.find(b"(") + 1:raw.rfind(b")")])


def link(pid: int, name: str) -> str | None:
    """Where /proc/PID/NAME (exe, cwd) points, without the " (deleted)" the
    kernel appends when the file still exists; None if unreadable."""
    try:
        path = os.readlink(f"/proc/{pid}/{name}").split("\0")[0]
    except OSError:
        return None
    if path.endswith(" (deleted)") and not os.path.exists(path):
        path = path[:-10]
    return path or None


def _text(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return os.fsdecode(f.read())
    except OSError:
        return None


def cmdline(pid: int) -> list[str] | None:
    """Arguments split at NULs, or at spaces for a program that rewrote its
    command line (setproctitle) into one string; [] for a zombie."""
    data = _text(pid, "cmdline")
    if not data:
        return None if data is None else []
    sep = "\0" if data.endswith("\0") else " "
    if data.endswith(sep):
        data = data[:-1]
    args = data.split(sep)
    if sep == "\0" and len(args) == 1 and " " in data:
        args = data.split(" ")
    return args


def environ(pid: int) -> dict[str, str] | None:
    """NAME=value entries ended by a NUL, up to the first empty one; entries
    without a name and = are skipped."""
    data = _text(pid, "environ")
    if data is None:
        return None
    out = {}
    for entry in data.split("\0")[:-1]:
        if not entry:
            break
        key, eq, value = entry.partition("=")
        if eq and key:
            out[key] = value
    return out


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
        found = _container(part)
        if found:
            prefix, out["container_id"] = found
            runtime = "kubernetes" if "kubepods" in path else _RUNTIMES.get(prefix)
            if runtime:
                out["container_runtime"] = runtime
            break
    return out


def _container(part: str) -> tuple[str, str] | None:
    """(runtime prefix or '', id) of a cgroup path part that names a
    container, `[RUNTIME-]ID[.scope]` with a 64-hex-digit ID: parsed by
    hand, since re would be imported before the first stop for this alone."""
    prefix, dash, name = part.removesuffix(".scope").rpartition("-")
    if len(name) != 64 or not _HEX.issuperset(name) or (dash and prefix not in _RUNTIMES):
        return None
    return prefix, name


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
