"""Perf maps (`/tmp/perf-PID.map`, written by JITs such as node --perf-basic-prof)
for the engine: a live process's, and a dead one's while its map file is
still there, if that file was written by the process that dumped core."""
from __future__ import annotations

from unwinder.dynamic import perf_map_module
from unwinder.files import read_regular

from .targets import procfs

MAX_PERF_MAP = 16 << 20
SLACK = 1.0  # seconds: %t and btime are whole seconds


def read(path: str, dir_fd: int | None = None) -> tuple[str, float] | None:
    """(text, mtime) of a perf map; not followed if a symlink."""
    got = read_regular(path, MAX_PERF_MAP, dir_fd, follow=False)
    return (got[0].decode("utf-8", "replace"), got[1]) if got else None


def live(pid: int | None) -> tuple[str | None, str]:
    """The text of the process's map (PID as the process itself sees it, in
    its own root), or None; and its name."""
    if pid is None:
        return None, ""
    nspid = (procfs.status_field(pid, "NSpid") or str(pid)).split()[-1]
    name = f"/tmp/perf-{nspid}.map"
    got = read(f"/proc/{pid}/root{name}")
    return (got[0] if got else None), name


def for_core(layout, read_map, ended: float,
             started: float | None) -> tuple[str | None, str, str | None]:
    """(text, name, why not) of the perf map of a core's process, read by
    `read_map(name) -> (text, mtime) | None` (name: /tmp/perf-PID.map, the
    pid as the process saw it). Used only if it may be that process's own:
    written no later than the core (`ended`), no earlier than the process
    started (when known), naming code the core holds as anonymous
    executable memory (where a JIT puts it)."""
    ps = layout.notes.psinfo
    if not ps or ps["pid"] <= 0:
        return None, "", None
    name = f"/tmp/perf-{ps['pid']}.map"
    text, why = _check(layout, name, read_map(name), ended, started)
    return text, name, why


def _check(layout, name, got, ended, started) -> tuple[str | None, str | None]:
    if got is None:
        return None, None
    text, mtime = got
    if mtime > ended + SLACK:
        return None, (f"{name}: modified after the crash ({_ago(mtime - ended)} later): "
                      "another process's, or rewritten since; not used")
    if started is not None and mtime < started - SLACK:
        return None, (f"{name}: written before the process started ({_ago(started - mtime)} "
                      "earlier): another process's with the same pid; not used")
    module = perf_map_module(text, name)
    if module is None:
        return None, f"{name}: no entries; not used"
    from .targets.corefile import PF_X  # a core's: not on attach's way
    anonymous = [s for s in layout.loads if s.flags & PF_X and s.vaddr not in layout.notes.files]
    if not any(s.vaddr < module.end and module.start < s.vaddr + s.memsz for s in anonymous):
        return None, f"{name}: names no code the core holds outside its files; not used"
    return text, None


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"
