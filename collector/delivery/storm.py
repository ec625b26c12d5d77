"""Crash-storm control: token buckets per fingerprint and for all reports,
persisted in the state directory so that every collector process (one per
crash under core_pattern) shares them. A suppressed report is counted; the
next report of its fingerprint that gets through says how many. A kernel
core is decided before its analysis, in the bucket of its storm key
(service/early.py), which remembers the fingerprint its last report had."""
from __future__ import annotations

import datetime
import fcntl
import os

from ..files import own_dir, write_atomic
from ..plainjson import dumps, loads  # not json: it brings re, ~7 ms of a pipe handler

STATE = "storm.json"


def iso(t: float) -> str:
    """A report's time: UTC, to the millisecond, "Z"."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc) \
        .isoformat(timespec="milliseconds").replace("+00:00", "Z")


def refill(bucket: dict, burst: int, per_minute: float, now: float) -> None:
    elapsed = max(0.0, now - bucket.get("t", now))  # a clock stepped back refills nothing
    bucket["tokens"] = min(burst, bucket.get("tokens", burst) + elapsed * per_minute / 60)
    bucket["t"] = now


def load(path: str) -> dict:
    """The saved buckets; a missing or damaged file starts afresh (a few
    reports too many get through, none is lost)."""
    try:
        with open(path, "rb") as f:
            state = loads(f.read())
    except OSError:
        state = {}
    if not isinstance(state, dict):
        state = {}
    state.setdefault("global", {})
    state.setdefault("fingerprints", {})
    if not isinstance(state["global"], dict) or not isinstance(state["fingerprints"], dict) \
            or not all(isinstance(b, dict) for b in state["fingerprints"].values()):
        state = {"global": {}, "fingerprints": {}}
    return state


class _Locked:
    """The state, read under the directory's lock and written back unless
    the block raised. A class, not contextlib.contextmanager: contextlib
    brings functools and collections, ~3 ms of a pipe handler."""

    def __init__(self, directory: str):
        self.dir = directory

    def __enter__(self) -> dict:
        own_dir(self.dir)
        self.fd = os.open(os.path.join(self.dir, "storm.lock"),
                          os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.state = load(os.path.join(self.dir, STATE))
        except BaseException:
            os.close(self.fd)
            raise
        return self.state

    def __exit__(self, kind, value, tb) -> None:
        try:
            if kind is None:
                write_atomic(os.path.join(self.dir, STATE), dumps(self.state).encode())
        finally:
            os.close(self.fd)


class Limiter:
    def __init__(self, state_dir: str, settings: dict):
        self.dir, self.s = state_dir, settings

    def state(self) -> _Locked:
        return _Locked(self.dir)

    def admit(self, fingerprint: str, now: float) -> tuple[bool, dict | None, str | None]:
        """(True, what was suppressed before it or None) or (False, None);
        then the fingerprint `label` gave the bucket, if any."""
        s = self.s
        with self.state() as state:
            fps = state["fingerprints"]
            bucket = fps.setdefault(fingerprint, {})
            refill(bucket, s["burst"], s["per_minute"], now)
            refill(state["global"], s["global_burst"], s["global_per_minute"], now)
            if bucket["tokens"] < 1 or state["global"]["tokens"] < 1:
                bucket["suppressed"] = bucket.get("suppressed", 0) + 1
                bucket.setdefault("first", iso(now))
                bucket["last"] = iso(now)
                admitted, suppressed = False, None
            else:
                bucket["tokens"] -= 1
                state["global"]["tokens"] -= 1
                admitted = True
                suppressed = {k: bucket.pop(k) for k in ("suppressed", "first", "last")
                              if k in bucket} or None
                if suppressed:
                    suppressed["count"] = suppressed.pop("suppressed")
            self.evict(fps, fingerprint)
        return admitted, suppressed, bucket.get("fingerprint")

    def label(self, name: str, fingerprint: str) -> None:
        """Remember in bucket `name` (a storm key's) the fingerprint of its report."""
        with self.state() as state:
            bucket = state["fingerprints"].get(name)
            if bucket is not None:
                bucket["fingerprint"] = fingerprint

    def evict(self, fps: dict, keep: str) -> None:
        """Bound the state: forget the longest-idle fingerprints, those with
        no suppressed count to hand on first."""
        excess = len(fps) - self.s["max_fingerprints"]
        if excess > 0:
            order = sorted((k for k in fps if k != keep),
                           key=lambda k: ("suppressed" in fps[k], fps[k]["t"]))
            for k in order[:excess]:
                del fps[k]
