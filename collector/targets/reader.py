"""Sequential reads of an fd: a pipe, a socket or a file, front to back,
with a time limit on each wait; the bytes a first reader took (`Recording`,
storm control's look at the notes) are replayed to the next (`head`)."""
from __future__ import annotations

import fcntl
import os
import select
import stat

CHUNK = 1 << 20


class Stalled(Exception):
    """No input for `idle_timeout` seconds."""


class Full(Exception):
    """A Recording would keep more than its limit."""


class Stream:
    """Sequential reads from a pipe, socket or file; waits at most
    `idle_timeout` seconds for each chunk; `pos` counts bytes consumed.
    Bytes skipped on a pipe are spliced to /dev/null, never copied to us.
    `head`: the first bytes of the input, already taken from `fd` by an
    earlier reader; they are read again from memory, then `fd` goes on."""

    def __init__(self, fd: int, idle_timeout: float, head: bytes = b""):
        self.fd = fd
        self.pos = 0
        self._head = memoryview(head)
        self.eof = False
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._timeout_ms = int(idle_timeout * 1000)
        self._scratch: memoryview | None = None
        self._null: int | None = None
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            self._null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            try:  # fewer, larger transfers
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)
            except OSError:
                pass

    def close(self) -> None:
        if self._null is not None:
            os.close(self._null)
            self._null = None

    def _advance(self, n: int) -> int:
        if n == 0:
            self.eof = True
        self.pos += n
        return n

    def _wait(self) -> None:
        if not self._poll.poll(self._timeout_ms):
            raise Stalled(f"no core data for {self._timeout_ms / 1000:g} s at offset {self.pos}")

    def _readinto(self, view: memoryview) -> int:
        if self.pos < len(self._head):
            n = min(len(view), len(self._head) - self.pos)
            view[:n] = self._head[self.pos:self.pos + n]
            return self._advance(n)
        self._wait()
        return self._advance(os.readv(self.fd, [view]))

    def read(self, size: int) -> bytearray:
        """`size` bytes, or fewer at the end of the input (read in place: a
        kept range is never copied twice)."""
        buf = bytearray(size)
        with memoryview(buf) as view:
            got = 0
            while got < size and not self.eof:
                got += self._readinto(view[got:])
        del buf[got:]
        return buf

    def skip_to(self, offset: int) -> None:
        while self.pos < offset and not self.eof:
            if self.pos < len(self._head):
                self.pos = min(offset, len(self._head))
            elif self._null is not None:
                self._wait()
                self._advance(os.splice(self.fd, self._null, min(offset - self.pos, 1 << 30)))
            else:
                if self._scratch is None:
                    self._scratch = memoryview(bytearray(CHUNK))
                self._readinto(self._scratch[:min(CHUNK, offset - self.pos)])


class Recording(Stream):
    """A Stream that keeps every byte it consumes (`kept`), skipped ones
    too, up to `limit`: what a first look at the input took, for the next
    reader's `head`."""

    def __init__(self, fd: int, idle_timeout: float, limit: int, head: bytes = b""):
        super().__init__(fd, idle_timeout, head)
        self.kept = bytearray()
        self.limit = limit

    def read(self, size: int) -> bytearray:
        if self.pos + size > self.limit:
            raise Full(f"more than {self.limit} bytes before the end of the notes")
        data = super().read(size)
        self.kept += data
        return data

    def skip_to(self, offset: int) -> None:
        if offset > self.pos:
            self.read(offset - self.pos)
