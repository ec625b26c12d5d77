"""Merging Python frames into a thread's frame dicts, and the fingerprint
of a thread that has them."""
from __future__ import annotations

from collector.delivery import fingerprint
from collector.pyframes import merge
from unwinder.interp import PyFrame, PyStack

LIB = "/usr/lib/libpython3.12.so.1.0"


def native(function, module=LIB, pc=0x1000):
    return {"index": 0, "pc": pc, "sp": pc + 8, "cfa": pc + 16, "module": module,
            "build_id": None, "rel_pc": pc, "function": function, "offset": 4, "method": "cfi"}


def shape(thread):
    return [(f["index"], f["function"], f["method"]) for f in thread["frames"]]


def test_each_group_above_its_eval_frame():
    thread = {"tid": 1, "frames": [native("clock_nanosleep", "/libc.so.6"), native("time_sleep"),
                                   native("_PyEval_EvalFrameDefault", pc=0x2000),
                                   native("_ctypes_callproc"),
                                   native("_PyEval_EvalFrameDefault.cold", pc=0x3000),
                                   native("main")]}
    merge(thread, PyStack([PyFrame("inner", "a.py", 3), PyFrame("mid", "a.py", 5, entry=True),
                           PyFrame("outer", "a.py", 9, entry=True)]))
    assert shape(thread) == [
        (0, "clock_nanosleep", "cfi"), (1, "time_sleep", "cfi"), (2, "inner", "interpreter"),
        (3, "mid", "interpreter"), (4, "_PyEval_EvalFrameDefault", "cfi"),
        (5, "_ctypes_callproc", "cfi"), (6, "outer", "interpreter"),
        (7, "_PyEval_EvalFrameDefault.cold", "cfi"), (8, "main", "cfi")]
    inner = thread["frames"][2]
    assert (inner["pc"], inner["sp"], inner["cfa"], inner["rel_pc"], inner["module"]) == \
        (0x2000, 0x2008, None, None, None)
    assert (inner["file"], inner["line"], inner["interpreter"]) == ("a.py", 3, "cpython")
    assert thread["methods"] == {"interpreter": 3}


def test_groups_without_an_eval_frame_go_last_and_errors_are_kept():
    thread = {"tid": 1, "frames": [native("poll"), native("_PyEval_EvalFrameDefault")]}
    merge(thread, PyStack([PyFrame("a", None, None, entry=True), PyFrame("b", "b.py", 1)],
                          error="python frames cut after 2: bad pointer 0x0"))
    assert [f["function"] for f in thread["frames"]] == \
        ["poll", "a", "_PyEval_EvalFrameDefault", "b"]
    assert "file" not in thread["frames"][1] and "line" not in thread["frames"][1]
    assert thread["interpreter_error"].startswith("python frames cut")


def test_no_native_frames_no_python_frames():
    thread = {"tid": 1, "frames": []}
    merge(thread, PyStack([PyFrame("a", "a.py", 1, entry=True)]))
    assert thread["frames"] == [] and "interpreter_error" in thread


def test_fingerprint_of_a_crash_in_a_c_extension():
    """The extension's frames, then the Python call site; the interpreter's
    own native frames (its module) and the crash machinery stay out."""
    def crashed(ext_function):
        thread = {"tid": 1, "crashed": True, "frames": [
            native("raise", "/libc.so.6"), native(ext_function, "/site/ext.so"),
            native("cfunction_call"), native("_PyEval_EvalFrameDefault"), native("Py_RunMain")]}
        merge(thread, PyStack([PyFrame("handler", "/srv/app/views.py", 40),
                               PyFrame("<module>", "/srv/app/main.py", 3, entry=True)]))
        return thread
    keys = fingerprint.frames(crashed("ext_parse"))
    assert keys == ["ext.so!ext_parse", "py:views.py!handler", "py:main.py!<module>"]
    assert fingerprint.frames(crashed("ext_other")) != keys
