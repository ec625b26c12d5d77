"""Where CPython keeps what a backtrace needs, per version (x86-64, default
build, 3.8-3.13).

3.13 publishes its own offsets: `_Py_DebugOffsets` at the start of
`_PyRuntime` (Include/internal/pycore_runtime.h, cookie "xdebugpy"); they are
read from the target. For 3.8-3.12 the table below is taken from the headers
of each release (Include/internal/pycore_runtime.h, pycore_interp.h,
cpython/pystate.h, cpython/code.h, 3.8-3.10 frameobject.h, 3.11+
internal/pycore_frame.h, cpython/unicodeobject.h) and checked against the
DWARF of pyenv builds (gdb `ptype /o`) and by tests that attach to each.

Field meanings:
  runtime_interpreters   _PyRuntimeState.interpreters.head
  interp_next, interp_threads
                         PyInterpreterState.next, .tstate_head (3.8-3.10)
                         or .threads.head (3.11+)
  tstate_next, tstate_thread_id (pthread_t),
  tstate_native_id       PyThreadState fields (native_thread_id: 3.11+)
  tstate_frame, cframe_frame
                         3.8-3.10: tstate->frame (a PyFrameObject *);
                         3.11-3.12: tstate->cframe, then
                         _PyCFrame.current_frame at cframe_frame;
                         3.13: tstate->current_frame (cframe_frame None)
  frame_previous, frame_code, frame_lasti
                         PyFrameObject f_back, f_code, f_lasti (an int:
                         bytes in 3.8-3.9, code units in 3.10) or
                         _PyInterpreterFrame previous, f_code/f_executable,
                         prev_instr (3.11-3.12) / instr_ptr (3.13)
  frame_is_entry         3.11: the frame a C call of the eval loop entered
  frame_owner            3.11+: FRAME_OWNED_BY_*; 3 = the C stack (3.12+,
                         the entry frame that separates two eval calls)
  code_*                 PyCodeObject fields; code_adaptive: the first
                         code unit (co_code_adaptive, 3.11+)
  ascii_size, compact_size
                         sizeof(PyASCIIObject), sizeof(PyCompactUnicodeObject):
                         where a compact string's characters begin
"""
from __future__ import annotations

import struct
from collections import namedtuple

DEBUG_COOKIE = b"xdebugpy"
FRAME_OWNED_BY_CSTACK = 3


# a named tuple, not a dataclass: dataclasses (and inspect) cost milliseconds to import
class Layout(namedtuple("Layout", (
        "version runtime_interpreters interp_next interp_threads tstate_next tstate_frame "
        "tstate_thread_id tstate_native_id cframe_frame frame_previous frame_code frame_lasti "
        "frame_is_entry frame_owner code_filename code_name code_qualname code_firstlineno "
        "code_linetable code_adaptive ascii_size compact_size"))):
    """code_linetable: co_lnotab in 3.8-3.9; None: not in that version."""
    __slots__ = ()

    @property
    def frame_objects(self) -> bool:
        """3.8-3.10: a chain of PyFrameObject, one C eval call each."""
        return self.version < (3, 11)


_38 = Layout(
    (3, 8), runtime_interpreters=32, interp_next=0, interp_threads=8,
    tstate_next=8, tstate_frame=24, tstate_thread_id=176,
    tstate_native_id=None, cframe_frame=None, frame_previous=24, frame_code=32,
    frame_lasti=104, frame_is_entry=None, frame_owner=None, code_filename=104,
    code_name=112, code_qualname=None, code_firstlineno=40, code_linetable=120,
    code_adaptive=None, ascii_size=48, compact_size=72)
_39 = _38._replace(version=(3, 9))
_310 = _39._replace(version=(3, 10), frame_lasti=96)
_311 = _310._replace(
    version=(3, 11), runtime_interpreters=40, interp_threads=16,
    tstate_frame=56, tstate_thread_id=152, tstate_native_id=160, cframe_frame=8,
    frame_previous=48, frame_code=32, frame_lasti=56, frame_is_entry=68, frame_owner=69,
    code_filename=112, code_name=120, code_qualname=128, code_firstlineno=72,
    code_linetable=136, code_adaptive=184)
_312 = _311._replace(
    version=(3, 12), interp_threads=72, tstate_thread_id=136,
    tstate_native_id=144, cframe_frame=0, frame_previous=8, frame_code=0, frame_is_entry=None,
    frame_owner=70, code_firstlineno=68, code_adaptive=192, ascii_size=40, compact_size=56)

TABLE = {layout.version: layout for layout in (_38, _39, _310, _311, _312)}

# _Py_DebugOffsets of 3.13 (struct offsets within it, as 3.13.0 lays it out)
_DEBUG = {
    "version": 8, "free_threaded": 16, "runtime_interpreters": 40,
    "interp_next": 64, "interp_threads": 72,
    "tstate_next": 168, "tstate_frame": 184, "tstate_thread_id": 192,
    "tstate_native_id": 200, "frame_previous": 232, "frame_code": 240, "frame_lasti": 248,
    "frame_owner": 264, "code_filename": 280, "code_name": 288, "code_qualname": 296,
    "code_linetable": 304, "code_firstlineno": 312, "code_adaptive": 344, "ascii_size": 560,
}
DEBUG_SIZE = 584


class LayoutError(Exception):
    """The interpreter's version or layout is not one this reader knows."""


def from_debug_offsets(data: bytes) -> Layout:
    """A Layout from the bytes of a 3.13 `_Py_DebugOffsets` (DEBUG_SIZE long)."""
    if data[:8] != DEBUG_COOKIE:
        raise LayoutError("no _Py_DebugOffsets cookie at _PyRuntime")
    values = {k: struct.unpack_from("<Q", data, at)[0] for k, at in _DEBUG.items()}
    version = values.pop("version")
    major, minor = version >> 24, (version >> 16) & 0xFF
    if (major, minor) != (3, 13):
        raise LayoutError(f"_Py_DebugOffsets of Python {major}.{minor}: "
                          "only 3.13's layout is known")
    if values.pop("free_threaded"):
        raise LayoutError("a free-threaded (no-GIL) build: not supported")
    if any(v > 1 << 16 for v in values.values()):
        raise LayoutError("implausible _Py_DebugOffsets")
    # the compact header adds utf8_length and utf8 to the ASCII one (3.12+)
    return Layout((3, 13), cframe_frame=None, frame_is_entry=None,
                  compact_size=values["ascii_size"] + 16, **values)


def for_version(version: tuple[int, int]) -> Layout:
    try:
        return TABLE[version]
    except KeyError:
        raise LayoutError(f"Python {version[0]}.{version[1]}: no offsets known "
                          "(3.8-3.13 are)") from None
