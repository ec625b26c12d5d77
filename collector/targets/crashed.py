"""The crashed process while the kernel holds it for its core dump.

/proc/PID is opened once as a directory fd and only used after checking
that it is the process being dumped (its status says CoreDumping, and the
pidfd, when the kernel gave one, still names that pid): a PID reused after
the crash can then never be mistaken for it, since every later read goes
through the fd and fails rather than reading another process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from unwinder.files import open_regular, read_regular

from .procfs import cgroup_fields, parse_maps, parse_status

MAX_FILES = 512           # distinct mapped files opened through map_files
MAX_PERF_MAP = 16 << 20
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def pidfd_pid(pidfd: int) -> int | None:
    """The pid a pidfd names in our pid namespace (-1 once it has exited)."""
    try:
        with open(f"/proc/self/fdinfo/{pidfd}") as f:
            for line in f:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Crashed:
    def __init__(self, pid: int, pidfd: int | None = None):
        self.pid = pid
        self.fd: int | None = None
        self.error: str | None = None
        try:
            self.fd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            self.error = f"/proc/{pid}: {e.strerror}: process metadata from the core only"
            return
        status = self.status()
        why = None
        if status.get("CoreDumping") != "1":
            why = "it is not dumping core (the pid was reused?)"
        elif pidfd is not None and pidfd_pid(pidfd) != pid:
            why = f"the pidfd names pid {pidfd_pid(pidfd)}"
        if why:
            self.error = (f"/proc/{pid} is not the crashed process: {why}; "
                          "metadata from the core only")
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _read(self, name: str) -> bytes | None:
        if self.fd is None:
            return None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return None
        try:
            return os.read(fd, 1 << 20)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _link(self, name: str) -> str | None:
        try:
            return os.readlink(name, dir_fd=self.fd) if self.fd is not None else None
        except OSError:
            return None

    def status(self, name: str = "status") -> dict[str, str]:
        return parse_status((self._read(name) or b"").decode("utf-8", "replace"))

    def info(self) -> dict:
        """Process metadata fields for the report (only what could be read)."""
        if self.fd is None:
            return {}
        status = self.status()
        out: dict = {}
        cmdline = self._read("cmdline")
        if cmdline:
            out["cmdline"] = [a.decode("utf-8", "replace") for a in cmdline.split(b"\0")[:-1]]
        for key, link in (("exe", "exe"), ("cwd", "cwd")):
            value = self._link(link)
            if value is not None:
                out[key] = value
        if "Name" in status:
            out["name"] = status["Name"]
        for key, name in (("ppid", "PPid"), ("uid", "Uid"), ("gid", "Gid")):
            try:
                out[key] = int(status[name].split()[0])
            except (KeyError, ValueError, IndexError):
                pass
        out.update(cgroup_fields((self._read("cgroup") or b"").decode("utf-8", "replace")))
        environ = self._read("environ")
        if environ:  # delivery keeps only what [redact] environment allows
            pairs = (e.decode("utf-8", "replace").partition("=") for e in environ.split(b"\0") if e)
            out["environ"] = {k: v for k, _, v in pairs}
        namespaces = {ns: self._link(f"ns/{ns}") for ns in NAMESPACES}
        out["namespaces"] = {ns: v for ns, v in namespaces.items() if v}
        return out

    def start_time(self) -> float | None:
        """When the process started (seconds since the epoch, to a clock
        tick and the second of boot): stat's starttime after /proc/stat's btime."""
        stat = self._read("stat") or b""
        try:
            ticks = int(stat.rsplit(b")", 1)[1].split()[19])
            with open("/proc/stat", "rb") as f:
                btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        except (OSError, ValueError, IndexError, StopIteration):
            return None
        return btime + ticks / os.sysconf("SC_CLK_TCK")

    def perf_map(self) -> tuple[str, bytes, float] | None:
        """(name, text, mtime) of /tmp/perf-PID.map in the process's own root
        (PID as it sees itself), not followed if a symlink; None if absent."""
        if self.fd is None:
            return None
        nspid = (self.status().get("NSpid") or str(self.pid)).split()[-1]
        name = f"/tmp/perf-{nspid}.map"
        got = read_regular("root" + name, MAX_PERF_MAP, dir_fd=self.fd, follow=False)
        return (name, *got) if got else None

    def threads(self) -> dict[int, tuple[int, str | None]]:
        """Thread id in the process's own pid namespace (as the core names
        it) -> (thread id here, name)."""
        if self.fd is None:
            return {}
        try:
            task = os.open("task", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return {}
        try:
            tids = [int(t) for t in os.listdir(task)]
        except (OSError, ValueError):
            return {}
        finally:
            os.close(task)
        out = {}
        for tid in tids:
            status = self.status(f"task/{tid}/status")
            try:
                inner = int(status.get("NSpid", str(tid)).split()[-1])
            except ValueError:
                inner = tid
            comm = self._read(f"task/{tid}/comm")
            out[inner] = (tid, comm.decode("utf-8", "replace").rstrip("\n") if comm else None)
        return out

    def code_mappings(self) -> list[tuple[int, int, str]]:
        """(start, end, path) of every mapping of a file that has code mapped."""
        maps = parse_maps((self._read("maps") or b"").decode("utf-8", "replace"))
        code = {m.path for m in maps if "x" in m.perms and m.path.startswith("/")}
        return [(m.start, m.end, m.path) for m in maps if m.path in code]

    def open_files(self, mappings: list[tuple[int, int, str]]) -> dict[int, str]:
        """Mapping start -> /proc/self/fd/N opening the exact file mapped
        there (even if deleted or in another mount namespace), one fd per
        distinct path."""
        if self.fd is None:
            return {}
        by_path: dict[str, str | None] = {}
        out = {}
        for start, end, path in mappings:
            if path not in by_path:
                by_path[path] = None
                if len(by_path) <= MAX_FILES:
                    try:  # a device mapped where a file should be is not read
                        fd = open_regular(f"map_files/{start:x}-{end:x}", dir_fd=self.fd)
                        by_path[path] = f"/proc/self/fd/{fd}"
                    except OSError:
                        pass
            if by_path[path]:
                out[start] = by_path[path]
        return out


@dataclass
class Seen:
    """What the handler took from /proc/PID before the core, as root: the
    process's metadata, its threads, and the files its code is mapped from,
    open (mapping start -> /proc/self/fd/N) for an unprivileged worker."""
    live: dict = field(default_factory=dict)
    tids: dict[int, tuple[int, str | None]] = field(default_factory=dict)
    files: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    started: float | None = None                 # when the process started
    perf_map: tuple[str, bytes, float] | None = None  # (name, text, mtime) of its perf map

    def fds(self) -> set[int]:
        return {int(path.rsplit("/", 1)[1]) for path in self.files.values()}


def look(pid: int | None, pidfd: int | None) -> Seen:
    if not pid:
        return Seen()
    crashed = Crashed(pid, pidfd)
    try:
        return Seen(crashed.info(), crashed.threads(), crashed.open_files(crashed.code_mappings()),
                    [crashed.error] if crashed.error else [], crashed.start_time(),
                    crashed.perf_map())
    finally:
        crashed.close()
