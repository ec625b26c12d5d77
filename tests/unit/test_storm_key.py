"""The storm key read from a core's first notes, and the bytes read for it
replayed to the streaming reader: the same result as reading the core once."""
from __future__ import annotations

import os

from collector.service import early
from collector.targets import corefile, stream

from test_core_parse import PAGE, STACK, TEXT, make_core, pipe_of, stack_bytes

AT_ENTRY = 9


def core(rip: int) -> bytes:
    stack = stack_bytes(64 << 10)
    return make_core([(100, rip, STACK + 0x8000), (101, TEXT + 0x10, STACK + 0x4000)],
                     [(TEXT, b"", 0x2000, corefile.PF_R | corefile.PF_X),
                      (STACK, stack, len(stack), corefile.PF_R | corefile.PF_W)],
                     files=[(TEXT, TEXT + 0x2000, "/opt/app/bin/app")],
                     auxv={AT_ENTRY: TEXT + 0x100})


def test_key_then_the_same_stream():
    data = core(TEXT + 0x1234)
    r, t = pipe_of(data)
    try:
        key, head = early.from_notes(r, 5)
        got = stream.stream(r, head=head)
    finally:
        os.close(r)
        t.join()
    assert (key.exe, key.signal, key.module, key.offset) == ("/opt/app/bin/app", 11, "app", 0x1234)
    assert 0 < len(head) < PAGE and data.startswith(head)
    whole = stream_once(data)
    assert got.bytes_read == whole.bytes_read == len(data) and got.errors == whole.errors
    assert got.space.read(STACK + 0x8000, 64) == whole.space.read(STACK + 0x8000, 64)
    assert got.layout.notes.threads == whole.layout.notes.threads


def stream_once(data: bytes) -> stream.Streamed:
    r, t = pipe_of(data)
    try:
        return stream.stream(r)
    finally:
        os.close(r)
        t.join()


def test_pc_outside_every_file_and_garbage():
    r, t = pipe_of(core(0x10))
    try:
        key, _ = early.from_notes(r, 5)
    finally:
        os.close(r)
        t.join()
    assert key.module == "[anon]" and key.offset is None  # the pc itself says nothing stable
    assert str(key) == "/opt/app/bin/app signal 11 at [anon]"
    for data in (b"", b"\x7fELF" + b"\xff" * 200, core(0x10)[:100]):
        r, t = pipe_of(data)
        try:
            key, head = early.from_notes(r, 5)
        finally:
            os.close(r)
            t.join()
        assert key is None and data.startswith(head)  # no key: what was read is still handed on
