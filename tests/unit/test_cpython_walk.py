"""The CPython reader on interpreter state built byte by byte in a
FakeSpace (3.12 and 3.10 layouts): threads, groups of frames per C eval
call, lines; and corrupt state: a reason in the thread, never a traceback."""
from __future__ import annotations

import random
import struct

from unwinder.interp.cpython import Found, from_runtime
from unwinder.interp.cpython_offsets import TABLE
from unwinder.space import FakeSpace

BASE, SIZE = 0x10000, 0x20000


class Heap:
    """Objects of one layout in one block of memory."""

    def __init__(self, version):
        self.L = TABLE[version]
        self.mem = bytearray(SIZE)
        self.top = 0x100
        self.code_type, self.str_type = self.alloc(16), self.alloc(16)
        self.runtime = self.alloc(256)

    def alloc(self, n: int) -> int:
        at = BASE + self.top
        self.top += (n + 15) & ~15
        return at

    def put(self, addr: int, fmt: str, *values):
        struct.pack_into(fmt, self.mem, addr - BASE, *values)

    def string(self, text: str) -> int:
        data = text.encode("ascii")
        addr = self.alloc(self.L.ascii_size + len(data) + 1)
        self.put(addr, "<QQq", 1, self.str_type, len(data))
        self.put(addr + 32, "<I", (1 << 2) | (1 << 5) | (1 << 6))   # 1-byte kind, compact, ascii
        at = addr - BASE + self.L.ascii_size
        self.mem[at:at + len(data)] = data
        return addr

    def bytes_(self, data: bytes) -> int:
        addr = self.alloc(32 + len(data) + 1)
        self.put(addr + 16, "<q", len(data))
        self.mem[addr - BASE + 32:addr - BASE + 32 + len(data)] = data
        return addr

    def code(self, name: str, first: int, table: bytes) -> int:
        L = self.L
        addr = self.alloc(max(L.code_adaptive or 0, L.code_linetable) + 64)
        self.put(addr + 8, "<Q", self.code_type)
        for at in (L.code_name, L.code_qualname):
            if at is not None:
                self.put(addr + at, "<Q", self.string(name))
        self.put(addr + L.code_filename, "<Q", self.string("app.py"))
        self.put(addr + L.code_firstlineno, "<i", first)
        self.put(addr + L.code_linetable, "<Q", self.bytes_(table))
        return addr

    def frame(self, code: int, previous: int, unit: int = 0, owner: int = 0) -> int:
        L = self.L
        addr = self.alloc(128)
        self.put(addr + L.frame_code, "<Q", code)
        self.put(addr + L.frame_previous, "<Q", previous)
        if L.frame_objects:
            self.put(addr + L.frame_lasti, "<i", unit)
        else:
            self.put(addr + L.frame_lasti, "<Q", code + L.code_adaptive + 2 * unit)
            self.put(addr + L.frame_owner, "<B", owner)
        return addr

    def threads(self, tops: dict[int, int]) -> None:
        """One interpreter, a thread state per (tid, top frame)."""
        L, interp, head = self.L, self.alloc(256), 0
        for tid, top in tops.items():
            ts = self.alloc(256)
            self.put(ts + L.tstate_next, "<Q", head)
            head = ts
            if L.tstate_native_id is not None:
                self.put(ts + L.tstate_native_id, "<Q", tid)
                cframe = self.alloc(16)
                self.put(ts + L.tstate_frame, "<Q", cframe)
                self.put(cframe + L.cframe_frame, "<Q", top)
            else:
                pthread = self.alloc(0x800)
                self.put(pthread + 0x2d0, "<I", tid)
                self.put(ts + L.tstate_thread_id, "<Q", pthread)
                self.put(ts + L.tstate_frame, "<Q", top)
        self.put(interp + L.interp_threads, "<Q", head)
        self.put(self.runtime + L.runtime_interpreters, "<Q", interp)

    def read(self, tids) -> Found:
        out = Found()
        found = {"_PyRuntime": self.runtime, "PyCode_Type": self.code_type,
                 "PyUnicode_Type": self.str_type}
        from_runtime(FakeSpace({BASE: bytes(self.mem)}), found, tids, out, "libpython", self.L)
        return out


def line_only(units: int, delta: int) -> bytes:
    """A 3.11+ location entry: `units` code units, line += delta, no columns."""
    return bytes([0x80 | 13 << 3 | (units - 1), (-delta << 1 | 1) if delta < 0 else delta << 1])


def stack_312():
    h = Heap((3, 12))
    table = line_only(2, 1) + line_only(3, 2)       # units 0-1: first+1, 2-4: first+3
    outer = h.code("outer", 10, table)
    inner = h.code("Cls.inner", 20, table)
    cb = h.code("callback", 30, table)
    entry2 = h.frame(0, 0, owner=3)                 # C stack entry of the outer eval call
    f_outer = h.frame(outer, entry2, unit=0)
    f_inner = h.frame(inner, f_outer, unit=3)
    entry1 = h.frame(0, f_inner, owner=3)           # a C call between (a ctypes callback)
    f_cb = h.frame(cb, entry1, unit=4)
    return h, f_cb, f_inner


def test_312_groups_lines_names():
    h, top, f_inner = stack_312()
    h.threads({101: top, 102: 0})
    out = h.read([101, 102])
    assert out.errors == [] and set(out.stacks) == {101, 102}
    got = [(f.function, f.file, f.line, f.entry) for f in out.stacks[101].frames]
    assert got == [("callback", "app.py", 33, True), ("Cls.inner", "app.py", 23, False),
                   ("outer", "app.py", 11, True)]
    assert out.stacks[102].frames == [] and out.stacks[101].error is None


def test_310_frame_objects_and_pthread_tids():
    h = Heap((3, 10))
    table = bytes([4, 1, 6, 2])                     # bytes 0-3: first+1, 4-9: first+3
    code = h.code("work", 5, table)
    f1 = h.frame(code, 0, unit=0)
    f2 = h.frame(code, f1, unit=3)                  # byte 6
    h.threads({7001: f2, 7002: f1})
    out = h.read([7001, 7002, 7003])
    assert [(f.function, f.line) for f in out.stacks[7001].frames] == [("work", 8), ("work", 6)]
    assert all(f.entry for f in out.stacks[7001].frames)
    assert [(f.function, f.line) for f in out.stacks[7002].frames] == [("work", 6)]


def test_corrupt_frames_give_a_reason_and_keep_what_was_read():
    h, top, f_inner = stack_312()
    h.threads({101: top})
    # the inner frame's code pointer now names a string, not a code object
    bad = h.string("not code")
    h.put(f_inner + h.L.frame_code, "<Q", bad)
    stack = h.read([101]).stacks[101]
    assert [f.function for f in stack.frames] == ["callback"]
    assert "cut after 1" in stack.error and "no code object" in stack.error
    # a loop in the frame chain
    h.put(f_inner + h.L.frame_code, "<Q", struct.unpack_from("<Q", h.mem, top - BASE)[0])
    h.put(f_inner + h.L.frame_previous, "<Q", top)
    stack = h.read([101]).stacks[101]
    assert "loop" in stack.error and len(stack.frames) == 2
    # the frame pointer points nowhere
    h.put(f_inner + h.L.frame_previous, "<Q", 0xdead0000)
    assert "cannot read" in h.read([101]).stacks[101].error


def test_unreadable_runtime_is_an_error_not_a_traceback():
    h = Heap((3, 12))
    h.put(h.runtime + h.L.runtime_interpreters, "<Q", 0x7777_0000)
    out = h.read([1])
    assert out.stacks == {} and len(out.errors) == 1 and "python frames" in out.errors[0]


def test_flipped_bytes_never_raise():
    rng = random.Random(12)
    h, top, f_inner = stack_312()
    h.threads({101: top})
    clean = bytes(h.mem)
    for _ in range(400):
        h.mem = bytearray(clean)
        for _ in range(rng.randrange(1, 8)):
            h.mem[rng.randrange(0x100, h.top)] = rng.randrange(256)
        out = h.read([101])                         # raises nothing
        for stack in out.stacks.values():
            assert len(stack.frames) <= 4


def debug_offsets(version=0x030D00F0, free_threaded=0, **override) -> bytes:
    from unwinder.interp.cpython_offsets import _DEBUG, DEBUG_COOKIE, DEBUG_SIZE
    data = bytearray(DEBUG_SIZE)
    data[:8] = DEBUG_COOKIE
    values = dict(version=version, free_threaded=free_threaded)
    values.update({k: 8 * i for i, k in enumerate(_DEBUG) if k not in values})
    values.update(override)
    for key, at in _DEBUG.items():
        struct.pack_into("<Q", data, at, values[key])
    return bytes(data)


def test_debug_offsets_of_313_only():
    import pytest

    from unwinder.interp.cpython_offsets import LayoutError, from_debug_offsets
    layout = from_debug_offsets(debug_offsets(tstate_native_id=200, ascii_size=40))
    assert layout.version == (3, 13) and layout.tstate_native_id == 200
    assert layout.compact_size == 56 and layout.cframe_frame is None
    for bad, why in ((debug_offsets(version=0x030E00A0), "3.14"),
                     (debug_offsets(free_threaded=1), "free-threaded"),
                     (debug_offsets(frame_owner=1 << 40), "implausible"),
                     (b"xdebugpz" + debug_offsets()[8:], "cookie")):
        with pytest.raises(LayoutError, match=why):
            from_debug_offsets(bad)
