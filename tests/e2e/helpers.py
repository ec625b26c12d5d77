"""Checks shared by the end-to-end tests: frame names, frame invariants,
independent facts about the target read from /proc and the ELF files, and
the eu-stack cross-check."""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

try:  # tests/conftest.py, imported by pytest as `conftest` (rootdir without __init__.py)
    from conftest import (NOBODY, REPO, collector_argv, collector_env, proc_state,
                          read_status, run_command, schema_errors, task_ids)
except ImportError:  # pragma: no cover - if tests/ ever becomes a package
    from tests.conftest import (NOBODY, REPO, collector_argv, collector_env, proc_state,
                                read_status, run_command, schema_errors, task_ids)

# ------------------------------------------------------------------ frames


def norm(name: str | None) -> str | None:
    """A function name without its symbol version: `clock_gettime@@GLIBC_2.17`
    and `clock_gettime@GLIBC_2.2.5` are both `clock_gettime`."""
    if name is None:
        return None
    return name.split("@", 1)[0]


def names(thread: dict) -> list[str | None]:
    return [norm(f.get("function")) for f in thread["frames"]]


def physical(frames: list[dict]) -> list[dict]:
    """The real call frames: without the extra `inlined` frames the
    collector may add for functions inlined at a pc (from DWARF)."""
    return [f for f in frames if not f.get("inlined")]


def fmt_frames(frames: list[dict]) -> str:
    out = []
    for f in frames:
        fn = f.get("function") or "??"
        off = f.get("offset")
        if off is not None and f.get("function"):
            fn += f"+{off:#x}"
        sig = " [signal]" if f.get("signal_frame") else ""
        sig += " [inlined]" if f.get("inlined") else ""
        out.append(f"  #{f.get('index')} {f.get('pc', 0):#x} sp={f.get('sp', 0):#x} "
                   f"{fn} ({f.get('module')}) {f.get('method')}{sig}")
    return "\n".join(out)


def fmt_thread(thread: dict) -> str:
    return (f"TID {thread.get('tid')} {thread.get('name')!r} state={thread.get('state')} "
            f"stop_reason={thread.get('stop_reason')!r} error={thread.get('error')!r}\n"
            + fmt_frames(thread.get("frames", [])))


def thread_by_tid(report: dict, tid: int) -> dict:
    for t in report["threads"]:
        if t["tid"] == tid:
            return t
    raise AssertionError(f"no thread {tid} in report; tids: {[t['tid'] for t in report['threads']]}")


def threads_by_name(report: dict) -> dict[str, dict]:
    return {t["name"]: t for t in report["threads"]}


def assert_chain(thread: dict, chain: list[str], max_above: int = 3) -> int:
    """`chain` (innermost first) appears as consecutive frames, with at most
    max_above real frames above it (frame 0 may be libc's syscall wrapper
    above the first chain function; inlined frames there are not counted).
    Returns the index of chain[0]."""
    ns = names(thread)
    assert chain[0] in ns, f"{chain[0]!r} not among the frames\n{fmt_thread(thread)}"
    i = ns.index(chain[0])
    above = len(physical(thread["frames"][:i]))
    assert above <= max_above, (f"{chain[0]!r} is frame #{i}; expected at most {max_above} frames "
                                f"above it\n{fmt_thread(thread)}")
    got = ns[i:i + len(chain)]
    assert got == chain, f"expected consecutive frames {chain}, got {got}\n{fmt_thread(thread)}"
    return i


def assert_frame_invariants(thread: dict, methods_after_0=("cfi",)):
    """Properties every unwound stack must have, whatever the program:
    - frames are indexed 0..n-1;
    - an inlined frame shares pc and sp with the frame after it, and has no
      CFA of its own; the rest below is about the real (physical) frames:
    - the first is the register context: method 'context', pc == rip, sp == rsp;
    - every later one was found by one of `methods_after_0`;
    - the stack only grows towards higher addresses as we walk out, and a
      CFI frame's sp is its callee's CFA (on x86-64 the CFA *is* the caller's
      rsp, also across the signal trampoline, whose CFA is the saved rsp);
    - pc - rel_pc (the load bias) is the same for every frame of a module.
    """
    frames = thread["frames"]
    assert frames, f"thread has no frames\n{fmt_thread(thread)}"
    assert [f["index"] for f in frames] == list(range(len(frames))), fmt_thread(thread)
    for f, nxt in zip(frames, frames[1:] + [None]):
        if f.get("inlined"):
            assert nxt is not None and nxt["pc"] == f["pc"] and nxt["sp"] == f["sp"], (
                f"inlined frame #{f['index']} does not share pc/sp with the next\n{fmt_thread(thread)}")
            assert f["cfa"] is None, fmt_thread(thread)
    real = physical(frames)
    assert real, f"only inlined frames\n{fmt_thread(thread)}"
    regs = thread["registers"]
    f0 = real[0]
    assert f0["method"] == "context", fmt_thread(thread)
    assert f0["pc"] == regs["rip"], f"frame 0 pc != rip {regs['rip']:#x}\n{fmt_thread(thread)}"
    assert f0["sp"] == regs["rsp"], f"frame 0 sp != rsp {regs['rsp']:#x}\n{fmt_thread(thread)}"
    for prev, f in zip(real, real[1:]):
        assert f["method"] in methods_after_0, (
            f"frame #{f['index']} found by {f['method']!r}, expected one of {methods_after_0}\n"
            f"{fmt_thread(thread)}")
        assert f["sp"] >= prev["sp"], f"sp went down at #{f['index']}\n{fmt_thread(thread)}"
        if f["method"] == "cfi" and prev["cfa"] is not None:
            assert f["sp"] == prev["cfa"], (
                f"frame #{f['index']} sp {f['sp']:#x} != CFA {prev['cfa']:#x} of #{prev['index']}\n"
                f"{fmt_thread(thread)}")
    bias: dict[str, int] = {}
    for f in frames:
        if f["module"] and f["rel_pc"] is not None:
            b = bias.setdefault(f["module"], f["pc"] - f["rel_pc"])
            assert f["pc"] - f["rel_pc"] == b, (
                f"inconsistent pc - rel_pc for {f['module']} at #{f['index']}\n{fmt_thread(thread)}")


def assert_thread_order(report: dict, pid: int):
    tids = [t["tid"] for t in report["threads"]]
    assert tids and tids[0] == pid, f"main thread is not first: {tids}"
    assert tids[1:] == sorted(tids[1:]), f"threads after the main one are not sorted by tid: {tids}"
    assert len(set(tids)) == len(tids), f"duplicate tids: {tids}"


def same_path(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


# ------------------------------------------------------------- ELF facts


def elf_type(path) -> str:
    with open(path, "rb") as f:
        return ELFFile(f).header["e_type"]


def build_id(path) -> str | None:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            if sec.header["sh_type"] == "SHT_NOTE":
                for note in sec.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return note["n_desc"]
    return None


def load_bias(pid: int, path) -> int:
    """Runtime address minus link-time address for the module at `path`,
    computed from /proc/PID/maps and the file's first PT_LOAD."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        if elf.header["e_type"] == "ET_EXEC":
            return 0
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        first = min(loads, key=lambda s: s["p_vaddr"])
        link_start = (first["p_vaddr"] - first["p_offset"]) & ~0xFFF
    st = os.stat(path)
    for line in open(f"/proc/{pid}/maps"):
        parts = line.split()
        if len(parts) < 6:
            continue
        start = int(parts[0].split("-")[0], 16)
        offset = int(parts[2], 16)
        inode = int(parts[4])
        if inode == st.st_ino and offset == 0:
            return start - link_start
    raise AssertionError(f"{path} is not mapped in {pid}")


def section_ranges(path, wanted: set[str]) -> dict[str, tuple[int, int]]:
    """Link-time [start, end) of the named sections, from `readelf -SW`."""
    out = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True,
                         check=True).stdout
    res = {}
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if m and m.group(1) in wanted:
            start, size = int(m.group(2), 16), int(m.group(3), 16)
            res[m.group(1)] = (start, start + size)
    return res


def debug_file_for(path) -> Path | None:
    bid = build_id(path)
    if not bid:
        return None
    p = Path("/usr/lib/debug/.build-id") / bid[:2] / f"{bid[2:]}.debug"
    return p if p.exists() else None


@functools.lru_cache(maxsize=None)
def _symbol_addresses(path: str) -> dict[str, frozenset[int]]:
    """name -> addresses of function symbols, over .symtab and .dynsym of the
    file and of its separate debug file (if installed)."""
    table: dict[str, set[int]] = {}
    files = [path]
    dbg = debug_file_for(path)
    if dbg:
        files.append(str(dbg))
    for p in files:
        with open(p, "rb") as f:
            elf = ELFFile(f)
            for secname in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(secname)
                if not isinstance(sec, SymbolTableSection):  # absent, or NOBITS in a debug file
                    continue
                for sym in sec.iter_symbols():
                    if sym["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC") and sym["st_value"]:
                        table.setdefault(norm(sym.name), set()).add(sym["st_value"])
    return {k: frozenset(v) for k, v in table.items()}


def same_function(ours: str, theirs: str, module: str | None) -> bool:
    """Two names for the function at one pc agree if they are equal modulo
    the symbol version, or if they are aliases: symbols at the same address in
    that module (glibc defines several names per function, e.g. `pause` and
    `__libc_pause`, `clone3` and `__clone3`; eu-stack prefers the global
    .dynsym name or the debug file's name, a collector may pick another one
    -- both are right)."""
    a, b = norm(ours), norm(theirs)
    if a == b:
        return True
    if module and module.startswith("["):
        strip = lambda n: n[len("__vdso_"):] if n.startswith("__vdso_") else n
        return strip(a) == strip(b)
    if not module or not os.path.exists(module):
        return False
    table = _symbol_addresses(module)
    return bool(table.get(a, frozenset()) & table.get(b, frozenset()))


# ---------------------------------------------------------------- eu-stack


def have_eu_stack() -> bool:
    return shutil.which("eu-stack") is not None


def eu_stack(pid: int, max_frames: int = 256, target: tuple = ()
             ) -> dict[int, list[tuple[int, str | None]]]:
    """{tid: [(pc, function name or None), ...]} from `eu-stack -p PID`
    (or, with `target`, e.g. ("--core", CORE, "-e", EXE), of that)."""
    target = tuple(map(str, target)) or ("-p", str(pid))
    r = subprocess.run(["eu-stack", "-n", str(max_frames), *target],
                       capture_output=True, text=True, timeout=120)
    # rc 1 = some frames with non-fatal errors; 2 = nothing shown
    assert r.returncode in (0, 1), f"eu-stack failed rc={r.returncode}: {r.stderr}"
    threads: dict[int, list] = {}
    cur = None
    for line in r.stdout.splitlines():
        m = re.match(r"TID (\d+):", line)
        if m:
            cur = threads.setdefault(int(m.group(1)), [])
            continue
        m = re.match(r"#(\d+)\s+0x([0-9a-f]+)(?:\s+(\S+))?", line)
        if m and cur is not None:
            cur.append((int(m.group(2), 16), m.group(3)))
    return threads


def cross_check_eu_stack(report: dict, pid: int, max_frames: int = 256):
    """For each thread, eu-stack's frames (same process, still parked) must be
    a prefix of ours by pc, and where both name a frame the names must agree
    (modulo aliases, see same_function). Both are printed side by side."""
    eu = eu_stack(pid, max_frames)
    assert set(eu) == {t["tid"] for t in report["threads"]}, (
        f"eu-stack saw threads {sorted(eu)}, we reported {[t['tid'] for t in report['threads']]}")
    for thread in report["threads"]:
        ours = physical(thread["frames"])  # eu-stack without -i shows no inlined frames
        theirs = eu[thread["tid"]]
        lines = [f"TID {thread['tid']} {thread['name']!r}: collector | eu-stack"]
        for i in range(max(len(ours), len(theirs))):
            o = ours[i] if i < len(ours) else None
            t = theirs[i] if i < len(theirs) else None
            left = f"{o['pc']:#x} {o.get('function')}" if o else ""
            right = f"{t[0]:#x} {t[1]}" if t else ""
            lines.append(f"  #{i:<3} {left:<60} | {right}")
        table = "\n".join(lines)
        print(table)
        if len(theirs) >= max_frames:
            theirs = theirs[:max_frames]
        assert len(ours) >= len(theirs), f"eu-stack found more frames than we did\n{table}"
        for i, (pc, name) in enumerate(theirs):
            assert ours[i]["pc"] == pc, f"frame #{i}: pc differs from eu-stack's\n{table}"
            if name and ours[i].get("function"):
                assert same_function(ours[i]["function"], name, ours[i].get("module")), (
                    f"frame #{i}: we say {ours[i]['function']!r}, eu-stack says {name!r}\n{table}")
