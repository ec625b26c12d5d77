"""CPython's own frames, read from memory through the AddressSpace.

`_PyRuntime` is found by symbol (.symtab or .dynsym of python or libpython);
its layout comes from `_Py_DebugOffsets` (3.13) or the table in
cpython_offsets (3.8-3.12; the version from `Py_Version`, 3.11+, else the
file name). The walk: interpreters -> thread states -> frames, newest
first; 3.8-3.10 chain PyFrameObjects (one C eval call each), 3.11+ chain
_PyInterpreterFrames, where one C eval call runs several: the frame marked
is_entry (3.11), or the one before an entry frame owned by the C stack
(3.12+), is the first its C call ran. Threads are matched to OS threads by
native_thread_id (3.11+), else by the tid glibc keeps in the pthread that
thread_id names. Every loop is bounded; a corrupt state ends that thread's
walk with a reason and the frames read so far.
"""
from __future__ import annotations

import os
import re
import struct

from ..dynamic import symbol_values
from ..elf import ElfError
from ..modules import ModuleMap
from ..space import AddressSpace, MemoryFault
from .cpython_lines import linetable310_line, lnotab_line, locations_line
from .cpython_offsets import (DEBUG_COOKIE, DEBUG_SIZE, FRAME_OWNED_BY_CSTACK, Layout,
                              LayoutError, for_version, from_debug_offsets)

MAX_INTERPRETERS = 64
MAX_THREADS = 4096          # thread states per interpreter
MAX_FRAMES = 4096           # Python frames per thread
MAX_STRING = 1024           # characters of a name or file name
MAX_TABLE = 1 << 20         # bytes of a line table
PTHREAD_SCAN = 0x800        # bytes of a glibc struct pthread searched for its tid
SYMBOLS = ("_PyRuntime", "Py_Version", "PyCode_Type", "PyUnicode_Type")


class PyFrame:
    """Plain classes, not dataclasses: those cost milliseconds to import."""
    __slots__ = ("function", "file", "line", "entry")

    def __init__(self, function: str | None, file: str | None, line: int | None,
                 entry: bool = False):
        self.function = function
        self.file = file
        self.line = line
        self.entry = entry  # the first frame its C eval call ran (the outermost of its group)

    def __repr__(self) -> str:
        return f"PyFrame({self.function!r}, {self.file!r}, {self.line!r}, entry={self.entry})"


class PyStack:
    __slots__ = ("frames", "error")

    def __init__(self, frames: list[PyFrame] | None = None, error: str | None = None):
        self.frames = [] if frames is None else frames
        self.error = error


class Found:
    __slots__ = ("stacks", "errors")

    def __init__(self, stacks: dict[int, PyStack] | None = None,
                 errors: list[str] | None = None):
        self.stacks = {} if stacks is None else stacks     # by OS tid
        self.errors = [] if errors is None else errors


class PythonError(Exception):
    """Interpreter state that does not make sense."""


_READ_ERRORS = (MemoryFault, PythonError, LayoutError, struct.error, ValueError, IndexError)


def python_frames(space: AddressSpace, modules: ModuleMap, tids: list[int]) -> Found:
    """Python frames of the OS threads `tids`, innermost first, for every
    CPython runtime in the address space (normally one)."""
    out = Found()
    for module in modules.load_all():
        if module.image is None or module.bias is None:
            continue
        try:
            found = symbol_values(module, SYMBOLS)
        except ElfError as e:
            out.errors.append(f"{module.path}: python: {e}")
            continue
        if "_PyRuntime" in found:
            from_runtime(space, found, tids, out, module.path)
    return out


def from_runtime(space: AddressSpace, found: dict[str, int], tids: list[int], out: Found,
                 path: str = "", layout: Layout | None = None) -> None:
    """The frames of one runtime (`found`: runtime addresses of SYMBOLS)
    into `out`; what cannot be read becomes an error there. `layout`: as
    the runtime says (None), or given."""
    try:
        Reader(space, layout or _layout(space, path, found), found).walk(tids, out.stacks)
    except _READ_ERRORS as e:
        out.errors.append(f"{path}: python frames: {e}")


def _layout(space: AddressSpace, path: str, found: dict[str, int]) -> Layout:
    runtime = found["_PyRuntime"]
    head = space.read(runtime, len(DEBUG_COOKIE))
    if head == DEBUG_COOKIE:
        return from_debug_offsets(space.read(runtime, DEBUG_SIZE))
    if "Py_Version" in found:
        hexversion = struct.unpack("<I", space.read(found["Py_Version"], 4))[0]
        return for_version((hexversion >> 24, (hexversion >> 16) & 0xFF))
    m = re.search(r"python(\d)\.(\d+)", os.path.basename(path))
    if not m:
        raise LayoutError("cannot tell the Python version (no Py_Version, "
                          "no version in the file name)")
    return for_version((int(m.group(1)), int(m.group(2))))


class Reader:
    def __init__(self, space: AddressSpace, layout: Layout, found: dict[str, int]):
        self.space = space
        self.layout = layout
        self.runtime = found["_PyRuntime"]
        self.code_type = found.get("PyCode_Type")
        self.str_type = found.get("PyUnicode_Type")
        self._codes: dict[int, tuple] = {}
        self._strings: dict[int, str | None] = {}

    def u64(self, addr: int) -> int:
        if not 0 < addr < 1 << 63:
            raise PythonError(f"bad pointer {addr:#x}")
        return struct.unpack("<Q", self.space.read(addr, 8))[0]

    def walk(self, tids: list[int], stacks: dict[int, PyStack]) -> None:
        L = self.layout
        states = []  # newest interpreter first: its frames run above an older one's
        for interp in self._chain(self.u64(self.runtime + L.runtime_interpreters),
                                  L.interp_next, MAX_INTERPRETERS):
            states += self._chain(self.u64(interp + L.interp_threads), L.tstate_next, MAX_THREADS)
        by_tid = self._tids(states, set(tids))
        for ts in states:
            tid = by_tid.get(ts)
            if tid is None:
                continue
            stack = stacks.setdefault(tid, PyStack())
            if stack.error:
                continue
            try:
                for frame in self._frames(self._top_frame(ts)):
                    stack.frames.append(frame)
            except _READ_ERRORS as e:
                stack.error = f"python frames cut after {len(stack.frames)}: {e}"

    def _chain(self, first: int, next_at: int, limit: int):
        seen, addr = set(), first
        while addr:
            if addr in seen:
                raise PythonError(f"a loop in a list at {addr:#x}")
            if len(seen) >= limit:
                raise PythonError(f"more than {limit} entries in a list")
            seen.add(addr)
            yield addr
            addr = self.u64(addr + next_at)

    def _tids(self, states: list[int], tids: set[int]) -> dict[int, int]:
        """Thread state -> OS tid."""
        L = self.layout
        if L.tstate_native_id is not None:
            out = {}
            for ts in states:
                try:
                    out[ts] = struct.unpack("<Q", self.space.read(ts + L.tstate_native_id, 8))[0]
                except MemoryFault:
                    continue
            return {ts: tid for ts, tid in out.items() if tid in tids}
        # 3.8-3.10 know only pthread_self(): find where glibc keeps the tid
        # in struct pthread (the offset that names known tids most often)
        blocks = {}
        for ts in states:
            try:
                blocks[ts] = self.space.read(self.u64(ts + L.tstate_thread_id), PTHREAD_SCAN)
            except _READ_ERRORS:
                continue
        best, best_count = None, 0
        for at in range(0, PTHREAD_SCAN, 4):
            count = sum(struct.unpack_from("<I", b, at)[0] in tids for b in blocks.values())
            if count > best_count:
                best, best_count = at, count
        if best is None:
            return {}
        return {ts: tid for ts, b in blocks.items()
                if (tid := struct.unpack_from("<I", b, best)[0]) in tids}

    def _top_frame(self, ts: int) -> int:
        """3.11-3.12 reach the newest frame through tstate->cframe."""
        L = self.layout
        top = self.u64(ts + L.tstate_frame)
        if L.cframe_frame is not None and top:
            top = self.u64(top + L.cframe_frame)
        return top

    def _frames(self, top: int):
        """PyFrames from `top` outwards, yielded as read (a fault later
        keeps them); `entry` is set on one once the next says so."""
        L = self.layout
        last = None
        size = max(L.frame_previous, L.frame_code, L.frame_lasti,
                   L.frame_owner or 0, L.frame_is_entry or 0) + 8
        for addr in self._chain(top, L.frame_previous, MAX_FRAMES):
            raw = self.space.read(addr, size)
            if L.frame_owner is not None and raw[L.frame_owner] == FRAME_OWNED_BY_CSTACK:
                if last is not None:
                    last.entry = True
                continue
            code = struct.unpack_from("<Q", raw, L.frame_code)[0]
            if L.frame_objects:
                lasti = struct.unpack_from("<i", raw, L.frame_lasti)[0]
                entry = True
            else:
                instr = struct.unpack_from("<Q", raw, L.frame_lasti)[0]
                lasti = (instr - code - L.code_adaptive) // 2
                entry = L.frame_is_entry is not None and raw[L.frame_is_entry] != 0
            last = PyFrame(*self._where(code, lasti), entry)
            yield last
        if last is not None:
            last.entry = True

    def _where(self, code: int, lasti: int) -> tuple[str | None, str | None, int | None]:
        L = self.layout
        if code not in self._codes:
            raw = self.space.read(code, max(L.code_filename, L.code_name, L.code_qualname or 0,
                                            L.code_firstlineno, L.code_linetable) + 8)
            if self.code_type and struct.unpack_from("<Q", raw, 8)[0] != self.code_type:
                raise PythonError(f"no code object at {code:#x}")
            ptr = lambda at: struct.unpack_from("<Q", raw, at)[0]  # noqa: E731
            name = self._string(ptr(L.code_qualname if L.code_qualname is not None
                                    else L.code_name))
            first = struct.unpack_from("<i", raw, L.code_firstlineno)[0]
            self._codes[code] = (name, self._string(ptr(L.code_filename)), first,
                                 self._bytes(ptr(L.code_linetable)))
        name, file, first, table = self._codes[code]
        line = None
        if table is not None:
            if L.version < (3, 10):
                line = lnotab_line(table, first, lasti)
            elif L.version < (3, 11):
                line = linetable310_line(table, first, lasti * 2)
            else:
                line = locations_line(table, first, lasti)
        return name, file, line if line and line > 0 else None

    def _string(self, addr: int) -> str | None:
        """A compact str object's text (names and file names always are)."""
        if addr in self._strings:
            return self._strings[addr]
        L, text = self.layout, None
        try:
            head = self.space.read(addr, L.ascii_size)
            ob_type, length = struct.unpack_from("<Qq", head, 8)
            state = struct.unpack_from("<I", head, 32)[0]
            kind, compact, ascii_ = (state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1
            if (self.str_type is None or ob_type == self.str_type) and compact \
                    and kind in (1, 2, 4) and 0 <= length:
                n = min(length, MAX_STRING)
                data = self.space.read(addr + (L.ascii_size if ascii_ else L.compact_size),
                                       n * kind)
                text = data.decode({1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind],
                                   "replace")
        except _READ_ERRORS:
            text = None
        self._strings[addr] = text
        return text

    def _bytes(self, addr: int) -> bytes | None:
        try:
            size = struct.unpack("<q", self.space.read(addr + 16, 8))[0]
            if not 0 <= size <= MAX_TABLE:
                return None
            return self.space.read(addr + 32, size) if size else b""
        except _READ_ERRORS:
            return None
