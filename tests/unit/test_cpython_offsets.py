"""The offset table of unwinder/interp/cpython_offsets.py against the
DWARF of pyenv's builds (gdb evaluates offsetof and sizeof in each
libpython), and the 3.13 _Py_DebugOffsets field positions likewise."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pythons import MINORS, pyenv

from unwinder.interp import cpython_offsets

RT, IS, TS, CF = "_PyRuntimeState", "PyInterpreterState", "PyThreadState", "_PyCFrame"
FO, IF, CO = "PyFrameObject", "struct _PyInterpreterFrame", "PyCodeObject"


def fields(version: tuple[int, int]) -> dict[str, str]:
    """Layout field -> the C expression of that offset or size in `version`."""
    new = version >= (3, 11)
    frame = IF if new else FO
    out = {
        "runtime_interpreters": f"{RT}.interpreters.head", "interp_next": f"{IS}.next",
        "interp_threads": f"{IS}." + ("threads.head" if new else "tstate_head"),
        "tstate_next": f"{TS}.next",
        "tstate_frame": f"{TS}." + ("cframe" if new else "frame"),
        "tstate_thread_id": f"{TS}.thread_id",
        "frame_previous": f"{frame}." + ("previous" if new else "f_back"),
        "frame_code": f"{frame}.f_code",
        "frame_lasti": f"{frame}." + ("prev_instr" if new else "f_lasti"),
        "code_filename": f"{CO}.co_filename", "code_name": f"{CO}.co_name",
        "code_firstlineno": f"{CO}.co_firstlineno",
        "code_linetable": f"{CO}." + ("co_lnotab" if version < (3, 10) else "co_linetable"),
        "ascii_size": "sizeof(PyASCIIObject)", "compact_size": "sizeof(PyCompactUnicodeObject)",
    }
    if new:
        out.update(tstate_native_id=f"{TS}.native_thread_id", cframe_frame=f"{CF}.current_frame",
                   frame_owner=f"{IF}.owner", code_qualname=f"{CO}.co_qualname",
                   code_adaptive=f"{CO}.co_code_adaptive")
    if version == (3, 11):
        out["frame_is_entry"] = f"{IF}.is_entry"
    return out


def gdb_values(lib: Path, exprs: list[str]) -> list[int]:
    args = []
    for e in exprs:
        if not e.startswith("sizeof"):
            struct_name, member = e.split(".", 1)
            e = f"&(({struct_name}*)0)->{member}"
        args += ["-ex", f"output (long)({e})", "-ex", "echo \\n"]
    r = subprocess.run(["gdb", "-batch", "-nx", *args, str(lib)], capture_output=True,
                       text=True, timeout=120)
    values = [int(v) for v in re.findall(r"^(-?\d+)$", r.stdout, re.M)]
    assert len(values) == len(exprs), r.stdout + r.stderr
    return values


def _lib(minor: str) -> Path:
    exe = pyenv(minor)
    if exe is None:
        pytest.skip(f"pyenv {minor} is not installed")
    if not shutil.which("gdb"):
        pytest.skip("gdb is not installed")
    lib = Path(exe).parents[1] / "lib" / f"libpython{minor}.so.1.0"
    if not lib.exists():
        pytest.skip(f"{lib}: not a shared build")
    return lib


@pytest.mark.parametrize("minor", [m for m in MINORS if m != "3.13"])
def test_table_matches_dwarf(minor):
    version = tuple(map(int, minor.split(".")))
    layout = cpython_offsets.TABLE[version]
    want = fields(version)
    got = dict(zip(want, gdb_values(_lib(minor), list(want.values()))))
    assert {k: getattr(layout, k) for k in want} == got
    # what the table leaves out is what that version does not have
    absent = set(layout._fields) - set(want) - {"version"}
    assert all(getattr(layout, k) is None for k in absent), absent


def test_debug_offsets_positions_match_dwarf():
    sections = {"runtime_interpreters": "runtime_state.interpreters_head",
                "interp_next": "interpreter_state.next",
                "interp_threads": "interpreter_state.threads_head",
                "tstate_next": "thread_state.next",
                "tstate_frame": "thread_state.current_frame",
                "tstate_thread_id": "thread_state.thread_id",
                "tstate_native_id": "thread_state.native_thread_id",
                "frame_previous": "interpreter_frame.previous",
                "frame_code": "interpreter_frame.executable",
                "frame_lasti": "interpreter_frame.instr_ptr",
                "frame_owner": "interpreter_frame.owner", "code_filename": "code_object.filename",
                "code_name": "code_object.name", "code_qualname": "code_object.qualname",
                "code_linetable": "code_object.linetable",
                "code_firstlineno": "code_object.firstlineno",
                "code_adaptive": "code_object.co_code_adaptive",
                "ascii_size": "unicode_object.asciiobject_size",
                "version": "version", "free_threaded": "free_threaded"}
    assert set(sections) == set(cpython_offsets._DEBUG)
    exprs = [f"struct _Py_DebugOffsets.{v}" for v in sections.values()] + \
        ["sizeof(struct _Py_DebugOffsets)", "sizeof(PyASCIIObject)",
         "sizeof(PyCompactUnicodeObject)"]
    *got, size, ascii_size, compact_size = gdb_values(_lib("3.13"), exprs)
    assert dict(zip(sections, got)) == cpython_offsets._DEBUG
    assert size == cpython_offsets.DEBUG_SIZE
    assert compact_size == ascii_size + 16  # what from_debug_offsets assumes
