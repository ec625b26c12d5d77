"""A stable id for grouping reports of the same bug (algorithm in README.md,
"Fingerprint"): nothing that changes from run to run (addresses, ASLR, pids,
tids) and nothing that every crash shares (the crash machinery) goes in."""
from __future__ import annotations

import itertools
import os

from ..digest import sha256

VERSION = "fp1"
FRAMES = 6
SURE = ("context", "cfi")
# Frames that say how the process died, not where: signal delivery, abort
# and assertion paths of glibc.
MACHINERY = frozenset({
    "raise", "gsignal", "abort", "__GI_raise", "__GI_abort", "__pthread_kill",
    "__pthread_kill_implementation", "__pthread_kill_internal", "pthread_kill",
    "__restore_rt", "__kernel_rt_sigreturn", "__assert_fail", "__assert_fail_base",
    "__assert_perror_fail", "__libc_message", "__libc_fatal", "__fortify_fail",
    "__chk_fail", "__stack_chk_fail", "malloc_printerr", "killpg", "kill", "tgkill",
})


def crashed_thread(threads: list[dict]) -> dict | None:
    """The thread marked `crashed`, else the first (the main thread)."""
    return next((t for t in threads if t.get("crashed")), threads[0] if threads else None)


def frame_key(frame: dict) -> str:
    module = os.path.basename(frame["module"]) if frame.get("module") else "?"
    if frame.get("function"):
        return f"{module}!{frame['function'].split('@')[0]}"
    if frame.get("build_id") and frame.get("rel_pc") is not None:
        return f"{frame['build_id']}+{frame['rel_pc']:#x}"
    if frame.get("rel_pc") is not None:
        return f"{module}+{frame['rel_pc']:#x}"
    return f"{module}!?"


def meaningful(thread: dict | None):
    """The thread's sure frames that are not crash machinery, top first."""
    for f in (thread or {}).get("frames", []):
        if f.get("method") in SURE and not f.get("signal_frame") and \
                (f.get("function") or "").split("@")[0] not in MACHINERY:
            yield f


def frames(thread: dict | None) -> list[str]:
    stack = (thread or {}).get("frames", [])
    python = [f for f in stack if f.get("method") == "interpreter"]
    if not python:
        return [frame_key(f) for f in itertools.islice(meaningful(thread), FRAMES)]
    # the native frames above the innermost Python one (a C extension's),
    # less the interpreter's own (the module of the eval frames, each just
    # below its Python frames), then the Python call site
    first = next(i for i, f in enumerate(stack) if f.get("method") == "interpreter")
    interpreter = {below.get("module") for f, below in zip(stack, stack[1:])
                   if f.get("method") == "interpreter" != below.get("method")}
    native = [frame_key(f) for f in meaningful({"frames": stack[:first]})
              if f.get("module") not in interpreter]
    return native[:FRAMES] + [f"py:{os.path.basename(f.get('file') or '?')}!{f.get('function')}"
                              for f in python[:FRAMES]]


def compute(report: dict) -> str:
    exe = (report.get("process") or {}).get("exe") or "?"
    keys = frames(crashed_thread(report.get("threads") or [])) or [f"exe:{os.path.basename(exe)}"]
    # a name may hold a file name's undecodable bytes (surrogates): hashed as they are
    text = "\n".join([VERSION, *keys]).encode("utf-8", "surrogatepass")
    return sha256(text).hexdigest()[:32]
