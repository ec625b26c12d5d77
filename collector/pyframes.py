"""Python frames in a report: read by unwinder.interp after the walk, then
merged into each thread's frames next to the native frames of the eval
loop that run them.

The merge works on the frame dicts, after frame_dict has named the native
frames from each module's symbol table (the name of the eval loop is in
.dynsym of every CPython build): the k-th group of Python frames, innermost
first, belongs to the k-th `_PyEval_EvalFrameDefault` frame and is placed
just above it, as the frames it was running. A group is one frame in
3.8-3.10, and from 3.11 everything one C call of the eval loop ran.
Groups with no eval frame left to go with go at the end.
COLLECTOR_PYTHON_FRAMES=0 turns the reading off.
"""
from __future__ import annotations

import os

from unwinder.interp import PyStack, python_frames

EVAL = "_PyEval_EvalFrameDefault"


def add_python_frames(space, modules, threads: list[dict]) -> list[str]:
    """Merge Python frames into `threads` (report thread dicts); errors."""
    if os.environ.get("COLLECTOR_PYTHON_FRAMES", "1") == "0":
        return []
    found = python_frames(space, modules, [t["tid"] for t in threads])
    for thread in threads:
        stack = found.stacks.get(thread["tid"])
        if stack is not None:
            merge(thread, stack)
    return found.errors


def is_eval(frame: dict) -> bool:
    name = frame.get("function") or ""
    return name == EVAL or name.startswith(EVAL + ".")  # a .cold part


def merge(thread: dict, stack: PyStack) -> None:
    groups, group = [], []
    for py in stack.frames:
        group.append(py)
        if py.entry:
            groups.append(group)
            group = []
    if group:
        groups.append(group)
    natives = thread["frames"]
    if stack.error:
        thread["interpreter_error"] = stack.error
    if not natives:
        if groups:
            thread["interpreter_error"] = (stack.error or
                                           "no native frames to place Python frames by")
        return
    out = []
    for native in natives:
        if groups and is_eval(native) and not native.get("inlined"):
            out += [_frame(py, native) for py in groups.pop(0)]
        out.append(native)
    out += [_frame(py, natives[-1]) for group in groups for py in group]
    for index, frame in enumerate(out):
        frame["index"] = index
    thread["frames"] = out
    methods = thread.setdefault("methods", {})
    methods["interpreter"] = len(stack.frames)


def _frame(py, native: dict) -> dict:
    """An interpreter frame: at the pc and sp of the eval frame running it."""
    out = {"index": 0, "pc": native["pc"], "sp": native["sp"], "cfa": None, "module": None,
           "build_id": None, "rel_pc": None, "function": py.function, "offset": None,
           "method": "interpreter", "interpreter": "cpython"}
    if py.file:
        out["file"] = py.file
    if py.line:
        out["line"] = py.line
    return out
