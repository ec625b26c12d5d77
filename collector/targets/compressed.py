"""Cores compressed as systemd-coredump stores them (core.*.zst, .xz, .lz4),
read as a stream: a thread decompresses into a pipe that stream.py reads
like the kernel's, so only the stack windows and small code are kept and
nothing is unpacked to disk."""
from __future__ import annotations

import os

# magic -> kind; the decompressor modules are imported only for such a core
MAGIC = {b"\x28\xb5\x2f\xfd": "zstd", b"\xfd7zXZ\x00": "xz", b"\x04\x22\x4d\x18": "lz4"}
MAX_OUT = 64 << 30      # a decompression bomb is cut here (said in errors)
CHUNK = 1 << 20


def kind(fd: int) -> str | None:
    head = os.pread(fd, 8, 0)
    return next((k for magic, k in MAGIC.items() if head.startswith(magic)), None)


def _reader(kind: str, f):
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    if kind == "xz":
        import lzma
        return lzma.LZMAFile(f)
    import lz4.frame
    return lz4.frame.LZ4FrameFile(f)


class Decompressing:
    """`fd`: the read end of a pipe carrying the decompressed core.
    `errors` is filled by the thread; read it after `close()`."""

    def __init__(self, path_fd: int, kind: str):
        import threading  # here: an uncompressed core never needs it
        self.kind = kind
        self.errors: list[str] = []
        self.fd, self._w = os.pipe2(os.O_CLOEXEC)
        self._file = os.fdopen(path_fd, "rb")
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        written = 0
        try:
            with _reader(self.kind, self._file) as reader:
                while written < MAX_OUT:
                    chunk = reader.read(min(CHUNK, MAX_OUT - written))
                    if not chunk:
                        return
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(self._w, view):]
                    written += len(chunk)
                self.errors.append(f"the {self.kind} core decompresses to more than "
                                   f"{MAX_OUT >> 30} GiB: read that far")
        except BrokenPipeError:
            return  # the reader has what it wanted
        except Exception as e:  # corrupt data: each library has its own error class
            self.errors.append(f"the {self.kind} core cannot be decompressed after "
                               f"{written} bytes: {type(e).__name__}: {e}")
        finally:
            os.close(self._w)
            self._file.close()

    def close(self) -> None:
        os.close(self.fd)
        self._thread.join()
