"""A debuginfod client: `GET URL/buildid/BUILDID/debuginfo` (and
`/executable`, for a core's files), servers from
$DEBUGINFOD_URLS, downloads kept in debuginfod-client's cache layout
($DEBUGINFOD_CACHE_PATH, else $XDG_CACHE_HOME/debuginfod_client) so the
collector and elfutils' tools share them.

Network I/O lives in collector/, not in the engine: the engine receives
`fetch` as a callable, and it is only called after the target is released
(attach unwinds the copy; symbolize works from a report).
"""
from __future__ import annotations

import os
import time

from unwinder.debuginfo import is_build_id

from .files import write_atomic

DEFAULT_TIMEOUT = 10.0   # seconds per request, unless $DEBUGINFOD_TIMEOUT says otherwise
MISS_TTL = 600           # a build-id no server has is not asked again for this long
MAX_SIZE = 2 << 30
CHUNK = 1 << 20


def cache_dir() -> str:
    path = os.environ.get("DEBUGINFOD_CACHE_PATH")
    if path:
        return path
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "debuginfod_client")


class Debuginfod:
    def __init__(self, urls: list[str], cache: str, deadline: float, timeout: float):
        self.urls = urls
        self.cache = cache
        self.deadline = deadline
        self.timeout = timeout
        self.errors: list[str] = []
        self._down: set[str] = set()  # a server that failed once is not asked again this run

    @classmethod
    def from_env(cls, deadline: float) -> Debuginfod | None:
        """None when DEBUGINFOD_URLS is unset or empty: no lookup at all."""
        urls = os.environ.get("DEBUGINFOD_URLS", "").split()
        if not urls:
            return None
        try:
            timeout = float(os.environ.get("DEBUGINFOD_TIMEOUT", DEFAULT_TIMEOUT))
        except ValueError:
            timeout = DEFAULT_TIMEOUT
        return cls([u.rstrip("/") for u in urls], cache_dir(), deadline, timeout)

    def fetch(self, build_id: str) -> str | None:
        """The local path of the debug file for build_id, or None."""
        return self._get(build_id, "debuginfo")

    def executable(self, build_id: str) -> str | None:
        """The local path of the file itself (a core's mapped file), or None."""
        return self._get(build_id, "executable")

    def _get(self, build_id: str, kind: str) -> str | None:
        if not is_build_id(build_id):
            return None
        path = os.path.join(self.cache, build_id, kind)
        try:
            st = os.stat(path)
            if st.st_size:
                return path
            if time.time() - st.st_mtime < MISS_TTL:
                return None  # an empty file: a recent miss
        except OSError:
            pass
        import urllib.error  # here: ~30 ms of imports, paid only when a lookup is made
        missed = 0
        for url in self.urls:
            if url in self._down:
                continue
            left = self.deadline - time.monotonic()
            if left <= 0:
                self.errors.append(f"debuginfod: no time left to ask for {build_id}")
                return None
            try:
                if self._download(f"{url}/buildid/{build_id}/{kind}", path,
                                  min(self.timeout, left)):
                    return path
                missed += 1
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    self.errors.append(f"debuginfod {url}: HTTP {e.code} for {build_id}")
                missed += 1
            except (OSError, ValueError) as e:  # URLError, timeouts, refused, disk
                reason = getattr(e, "reason", e)
                self.errors.append(f"debuginfod {url}: {reason} (not asked again this run)")
                self._down.add(url)
        if missed == len(self.urls):
            try:
                self._write(path, [])  # remember the miss, as debuginfod-client does
            except OSError:
                pass
        return None

    def _download(self, url: str, path: str, timeout: float) -> bool:
        import urllib.request
        with urllib.request.urlopen(url, timeout=timeout) as response:
            chunks, size = [], 0
            while True:
                if time.monotonic() > self.deadline:
                    raise TimeoutError("time budget exceeded while downloading")
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_SIZE:
                    raise ValueError(f"{url}: larger than {MAX_SIZE} bytes")
                chunks.append(chunk)
        if not chunks or not chunks[0].startswith(b"\x7fELF"):
            return False
        self._write(path, chunks)
        return True

    def _write(self, path: str, chunks: list[bytes]) -> None:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_atomic(path, chunks)
