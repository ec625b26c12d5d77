"""Reports that a sink could not take yet, kept on disk in order until it
can. One file per report, written to a temporary name and renamed (0600, in
a 0700 directory); its first line lists the sinks still owed the report,
the second line is the report. Capped in count and bytes: the oldest go
first and are counted, so the next report can say so. A report a sink
refused for good is set aside as .rejected-NAME (renaming it back to NAME
queues it again), never retried on its own.

On a full disk, what was delivered is still settled (the list of sinks owed
is then rewritten in place, in the blocks it has), and the bookkeeping
(`dropped`, `sinks.json`) is best effort: losing it costs a count or a
retry pause, never a report or a second copy."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time

from ..files import own_dir, write_atomic
from ..logging import log
from .sinks import line

REJECTED = ".rejected-"  # refused for good by a sink: rename back to queue again
CORRUPT = ".corrupt-"  # an entry that could not be read: kept to look at, not retried
DROPPED = "dropped"    # how many were dropped since the last report said so
RESTING = "sinks.json"  # sink name -> when it last failed


class Spool:
    def __init__(self, settings: dict):
        self.dir = settings["dir"]
        self.max_reports, self.max_bytes = settings["max_reports"], settings["max_bytes"]
        self.retry_after = settings["retry_after"]

    @contextlib.contextmanager
    def locked(self):
        """Every spool operation runs under this lock (OSError if the
        directory cannot be made or opened)."""
        own_dir(self.dir)
        fd = os.open(os.path.join(self.dir, ".lock"),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self
        finally:
            os.close(fd)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def write(self, name: str, data: bytes) -> None:
        write_atomic(self.path(name), data, fsync=True)

    def entries(self) -> list[str]:
        """Spooled reports, oldest first."""
        return sorted(n for n in os.listdir(self.dir) if n.endswith(".json") and n[0].isdigit())

    def size(self, name: str) -> int:
        return os.path.getsize(self.path(name))

    def owed(self) -> dict[str, list[str]]:
        """Spooled report -> sinks still owed it, oldest first. An unreadable
        entry is set aside (renamed .corrupt-*, at most max_reports of them), not
        retried forever."""
        out = {}
        for name in self.entries():
            try:
                out[name] = self.pending(name)
            except (OSError, ValueError):
                os.replace(self.path(name), self.path(CORRUPT + name))
                self.cap_aside(CORRUPT)
        return out

    def pending(self, name: str) -> list[str]:
        with open(self.path(name), "rb") as f:
            return json.loads(f.readline())

    def report(self, name: str) -> dict:
        with open(self.path(name), "rb") as f:
            f.readline()
            return json.loads(f.readline())

    def add(self, report: dict, pending: list[str]) -> None:
        self.write(self.new_name(report), json.dumps(pending).encode() + b"\n" + line(report))
        self.enforce_cap()

    def new_name(self, report: dict) -> str:
        return f"{time.time_ns():020d}-{report.get('report_id', 'unknown')}.json"

    def set_aside(self, report: dict, sink: str) -> str:
        """Keep a report `sink` refused for good, out of the queue (so it
        blocks nothing); at most max_reports of them, the oldest go first."""
        name = REJECTED + self.new_name(report)
        self.write(name, json.dumps([sink]).encode() + b"\n" + line(report))
        self.cap_aside(REJECTED)
        return name

    def cap_aside(self, prefix: str) -> None:
        """At most max_reports files set aside as `prefix`*, the oldest go first."""
        kept = sorted(n for n in os.listdir(self.dir) if n.startswith(prefix))
        for old in kept[:max(0, len(kept) - self.max_reports)]:
            os.unlink(self.path(old))

    def settle(self, name: str, sink: str) -> None:
        """`sink` got the report: owe it no more (and drop the file when no
        sink is owed it)."""
        pending = [p for p in self.pending(name) if p != sink]
        if not pending:
            os.unlink(self.path(name))
            return
        with open(self.path(name), "rb") as f:
            first = f.readline()
            rest = f.read()
        head = json.dumps(pending).encode()
        try:
            self.write(name, head + b"\n" + rest)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # no room for a copy: a shorter list, padded, fits where the old one was
            fd = os.open(self.path(name), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.pwrite(fd, head.ljust(len(first) - 1), 0)
                os.fsync(fd)
            finally:
                os.close(fd)

    def enforce_cap(self) -> None:
        names = self.entries()
        sizes = [self.size(n) for n in names]
        total, dropped = sum(sizes), 0
        while names and (len(names) > self.max_reports or total > self.max_bytes):
            os.unlink(self.path(names.pop(0)))
            total -= sizes.pop(0)
            dropped += 1
        if dropped:
            self.keep(DROPPED, self.read_json(DROPPED, 0) + dropped)

    def keep(self, name: str, value) -> None:
        """Bookkeeping: written if the disk has room, else said in the log."""
        try:
            self.write(name, json.dumps(value).encode())
        except OSError as e:
            log.warning("spool bookkeeping not saved", file=self.path(name),
                        error=e.strerror or str(e))

    def read_json(self, name: str, default):
        """The value kept in `name`, or `default` if there is none of its type."""
        try:
            with open(self.path(name), "rb") as f:
                value = json.loads(f.read())
        except (OSError, ValueError):
            return default
        return value if type(value) is type(default) else default

    def take_dropped(self) -> int:
        n = self.read_json(DROPPED, 0)
        if n:
            os.unlink(self.path(DROPPED))
        return n

    def resting(self, sink: str, now: float) -> bool:
        """A sink that failed less than retry_after seconds ago is not tried
        again yet (a storm must not wait on a dead pipeline once per crash)."""
        failed = self.read_json(RESTING, {}).get(sink)
        return failed is not None and 0 <= now - failed < self.retry_after

    def mark(self, sink: str, failed_at: float | None) -> None:
        state = self.read_json(RESTING, {})
        if state.get(sink) != failed_at:
            state[sink] = failed_at
            self.keep(RESTING, {k: v for k, v in state.items() if v})
