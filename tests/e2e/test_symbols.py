"""Symbolization of real processes: file:line, inlined frames and demangled
names equal to `eu-stack -i -s`; debug info from a separate file (debuglink
and build-id layout), from MiniDebugInfo, from a real debuginfod server; a
report symbolized later equals one taken with debug info.

Debug directories are pointed at temp dirs with COLLECTOR_DEBUG_DIRS.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess

import pytest

from .helpers import (REPO, build_id, collector_argv, collector_env, fmt_thread, run_command,
                      same_function, same_path, schema_errors)
from .receivers import debuginfod_server, free_port

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
SOURCE = REPO / "tests" / "fixtures" / "inline.cc"
WORKERS = 2


def sh(*argv):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, argv))}: {r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """full: -O2 -g; split: stripped, with a debuglink, its debug file in
    debug/ (build-id layout) and beside it; mini: stripped with .gnu_debugdata."""
    d = tmp_path_factory.mktemp("symbols")
    full = d / "full" / "inline"
    full.parent.mkdir()
    sh("g++", "-O2", "-g", "-pthread", SOURCE, "-o", full)
    split = d / "split" / "inline"
    split.parent.mkdir()
    debug = d / "inline.debug"
    sh("objcopy", "--only-keep-debug", full, debug)
    sh("objcopy", "--strip-all", f"--add-gnu-debuglink={debug}", full, split)
    bid = build_id(full)
    layout = d / "debug" / ".build-id" / bid[:2] / f"{bid[2:]}.debug"
    layout.parent.mkdir(parents=True)
    shutil.copy(debug, layout)
    mini = d / "mini" / "inline"
    mini.parent.mkdir()
    funcs = d / "funcs"
    syms = sh("nm", "--defined-only", "--format=posix", debug)
    funcs.write_text("".join(line.split()[0] + "\n" for line in syms.splitlines()
                             if line.split()[1] in "TtWw"))
    minidebug = d / "mini.debug"
    sh("objcopy", "--strip-all", "--keep-section=.symtab", f"--keep-symbols={funcs}",
       "--remove-section=.gdb_index", "--remove-section=.comment", debug, minidebug)
    sh("xz", "-f", minidebug)
    sh("objcopy", "--strip-all", full, mini)
    sh("objcopy", f"--add-section=.gnu_debugdata={minidebug}.xz", mini)
    zstd = d / "zstd" / "inline"  # as gcc -gz=zstd writes them (gcc 12 cannot yet)
    zstd.parent.mkdir()
    sh("objcopy", "--compress-debug-sections=zstd", full, zstd)
    return {"full": full, "split": split, "debug_dir": d / "debug", "debug": debug,
            "mini": mini, "zstd": zstd, "empty": d / "empty", "dir": d}


def env(**extra) -> dict:
    e = collector_env()
    e.pop("DEBUGINFOD_URLS", None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def attach(pid, *args, timeout=60, **env_vars):
    res = run_command(collector_argv("attach", *args, pid), timeout=timeout, env=env(**env_vars))
    assert res.rc == 0 and res.report, str(res)
    return res


def signature(report) -> list[list[tuple]]:
    """Per thread, what symbolization decides for each frame."""
    return [[(f["build_id"], f["rel_pc"], f["function"], f.get("file"), f.get("line"),
              f.get("column"), bool(f.get("inlined"))) for f in t["frames"]]
            for t in report["threads"]]


def exe_frames(thread, exe):
    return [f for f in thread["frames"] if same_path(f["module"], exe)]


def eu_stack_inline(pid) -> dict[int, list[tuple]]:
    """{tid: [(pc, name, file, line, column)]} from `eu-stack -i -s`."""
    out = subprocess.run(["eu-stack", "-i", "-s", "-p", str(pid)], capture_output=True,
                         text=True, timeout=60, env=env()).stdout
    threads, cur = {}, None
    for line in out.splitlines():
        if m := re.match(r"TID (\d+):", line):
            cur = threads.setdefault(int(m.group(1)), [])
        elif m := re.match(r"#\d+\s+0x([0-9a-f]+)\s*(.*)", line):  # no name: libstdc++'s
            cur.append([int(m.group(1), 16), m.group(2).strip() or None, None, None, None])
        elif m := re.match(r"\s+(\S+?):(\d+)(?::(\d+))?$", line):
            cur[-1][2:] = [m.group(1), int(m.group(2)), int(m.group(3)) if m.group(3) else None]
    return {tid: [tuple(f) for f in frames] for tid, frames in threads.items()}


@pytest.mark.skipif(shutil.which("eu-stack") is None, reason="eu-stack is not installed")
def test_cxx_lines_inlines_and_names_equal_eu_stack(builds, spawn):
    """Frames, file:line:column and the libraries' names as eu-stack -i -s;
    the program's C++ names are qualified where eu-stack prints DWARF's bare
    name (test_cxx_names.py holds them to addr2line and gdb)."""
    target = spawn(builds["full"], WORKERS)
    report = attach(target.pid).report
    eu = eu_stack_inline(target.pid)
    for thread in report["threads"]:
        ours, theirs = thread["frames"], eu[thread["tid"]]
        table = fmt_thread(thread) + "\neu-stack:\n" + "\n".join(map(str, theirs))
        assert len(ours) == len(theirs), table
        for o, (pc, name, file, line, column) in zip(ours, theirs):
            assert o["pc"] == pc, table
            assert (o.get("file"), o.get("line"), o.get("column")) == (file, line, column), table
            assert o.get("function") == name or same_function(o["function"], name, o["module"]) \
                or same_path(o["module"], builds["full"]), table
        checkout = [f for f in ours if f.get("inlined")
                    and f["function"] == "shop::detail::checkout"]
        assert len(checkout) == 1, table
        i = ours.index(checkout[0])
        assert ours[i + 1]["pc"] == checkout[0]["pc"] and not ours[i + 1].get("inlined"), table
        assert re.fullmatch(r"shop::(Basket<(long|double)>::pay|Till<short>::ring)\(int\)",
                            ours[i + 1]["function"]), table
        assert ours[i + 1]["linkage_name"].startswith("_ZN4shop"), table


def test_zstd_compressed_debug_sections(builds, spawn):
    """ELFCOMPRESS_ZSTD sections: the same lines and inlines as uncompressed."""
    shown = sh("readelf", "-t", builds["zstd"])
    assert "ZSTD" in shown, "objcopy did not compress with zstd"
    want = signature(attach(spawn(builds["full"], WORKERS).pid).report)
    report = attach(spawn(builds["zstd"], WORKERS).pid).report
    assert signature(report) == want, report["errors"]
    assert any(f.get("inlined") for t in report["threads"] for f in t["frames"])


def test_split_debug_file_by_debuglink_and_build_id(builds, spawn):
    want = signature(attach(spawn(builds["full"], WORKERS).pid).report)
    target = spawn(builds["split"], WORKERS)
    # the debuglink names a file that is not beside the binary: found by build-id only
    by_id = attach(target.pid, COLLECTOR_DEBUG_DIRS=f"/usr/lib/debug:{builds['debug_dir']}")
    assert signature(by_id.report) == want, fmt_thread(by_id.report["threads"][0])
    shutil.copy(builds["debug"], builds["split"].parent / "inline.debug")
    try:
        by_link = attach(target.pid, COLLECTOR_DEBUG_DIRS="/usr/lib/debug")
    finally:
        os.unlink(builds["split"].parent / "inline.debug")
    assert signature(by_link.report) == want
    assert any(f.get("inlined") for f in by_link.report["threads"][0]["frames"])


def test_stripped_without_debug_info_has_no_lines(builds, spawn):
    target = spawn(builds["split"], WORKERS)
    report = attach(target.pid, COLLECTOR_DEBUG_DIRS=builds["empty"]).report
    for thread in report["threads"]:
        frames = exe_frames(thread, builds["split"])
        assert frames and not any(f.get("file") or f.get("inlined") for f in frames), \
            fmt_thread(thread)
    assert not [e for e in report["errors"] if "debuginfod" in e]  # DEBUGINFOD_URLS unset


def test_minidebuginfo_names_static_functions(builds, spawn):
    target = spawn(builds["mini"], WORKERS)
    report = attach(target.pid, COLLECTOR_DEBUG_DIRS=builds["empty"]).report
    want = [f for f in attach(spawn(builds["full"], WORKERS).pid).report["threads"][1]["frames"]
            if same_path(f["module"], builds["full"]) and not f.get("inlined")]
    got = exe_frames(report["threads"][1], builds["mini"])
    # worker() is static: only .gnu_debugdata's .symtab names it
    assert [(f["rel_pc"], f["offset"]) for f in got] == [(f["rel_pc"], f["offset"]) for f in want]
    assert "worker(void*)" in [f["function"] for f in got], fmt_thread(report["threads"][1])


def test_symbolize_later_equals_symbolized_at_attach(builds, spawn, tmp_path):
    target = spawn(builds["split"], WORKERS)
    dirs = f"/usr/lib/debug:{builds['debug_dir']}"
    want = attach(target.pid, COLLECTOR_DEBUG_DIRS=dirs).report
    bare = attach(target.pid, COLLECTOR_DEBUG_DIRS=builds["empty"]).report
    assert signature(bare) != signature(want)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(bare))
    res = run_command(collector_argv("symbolize", path), env=env(COLLECTOR_DEBUG_DIRS=dirs))
    assert res.rc == 0, str(res)
    later = json.loads(res.stdout)
    assert not schema_errors(later), schema_errors(later)
    assert signature(later) == signature(want)
    again = tmp_path / "again.json"
    again.write_text(res.stdout)
    res = run_command(collector_argv("symbolize", again), env=env(COLLECTOR_DEBUG_DIRS=dirs))
    assert signature(json.loads(res.stdout)) == signature(want), "symbolize is not idempotent"


def test_time_budget_is_reported(builds, spawn, tmp_path):
    target = spawn(builds["full"], WORKERS)
    report = attach(target.pid, "--symbolize-budget", "0").report
    assert "symbolize_ms" not in report["timings"]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    res = run_command(collector_argv("symbolize", "--symbolize-budget", "1e-9", path), env=env())
    out = json.loads(res.stdout)
    assert any("time budget" in e for e in out["errors"]), out["errors"]
    assert not any(f.get("file") for t in out["threads"] for f in t["frames"])


# ---------------------------------------------------------------- debuginfod


@pytest.fixture(scope="module")
def debuginfod(builds, tmp_path_factory):
    served = tmp_path_factory.mktemp("served")
    shutil.copy(builds["debug"], served / "inline.debug")
    with debuginfod_server(served, served.parent / "db.sqlite",
                           f"/buildid/{build_id(builds['full'])}/debuginfo") as url:
        yield url


def test_debuginfod_serves_the_debug_file(builds, spawn, debuginfod, tmp_path):
    want = signature(attach(spawn(builds["full"], WORKERS).pid).report)
    target = spawn(builds["split"], WORKERS)
    res = attach(target.pid, DEBUGINFOD_URLS=debuginfod, DEBUGINFOD_CACHE_PATH=tmp_path,
                 COLLECTOR_DEBUG_DIRS="/usr/lib/debug")
    assert signature(res.report) == want, res.report["errors"]
    bid = build_id(builds["full"])
    assert (tmp_path / bid / "debuginfo").stat().st_size > 0
    # from the cache: no server is asked (this one refuses every connection)
    bare = attach(target.pid, "--symbolize-budget", "0").report
    path = tmp_path / "report.json"
    path.write_text(json.dumps(bare))
    refused = f"http://127.0.0.1:{free_port()}"
    res = run_command(collector_argv("symbolize", path),
                      env=env(DEBUGINFOD_URLS=refused, DEBUGINFOD_CACHE_PATH=tmp_path,
                              COLLECTOR_DEBUG_DIRS="/usr/lib/debug"))
    later = json.loads(res.stdout)
    assert signature(later) == want
    assert not [e for e in later["errors"] if "debuginfod" in e], later["errors"]


@pytest.mark.parametrize("server", ["refused", "silent"])
def test_debuginfod_down_still_reports_within_budget(builds, spawn, tmp_path, server):
    target = spawn(builds["split"], WORKERS)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if server == "silent":
        listener.listen(8)  # accepts connections, never answers
    else:
        listener.close()
    budget = 2.0
    try:
        res = attach(target.pid, "--symbolize-budget", budget,
                     DEBUGINFOD_URLS=f"http://127.0.0.1:{port}", DEBUGINFOD_CACHE_PATH=tmp_path,
                     COLLECTOR_DEBUG_DIRS=builds["empty"])
    finally:
        listener.close()
    report = res.report
    assert report["timings"]["symbolize_ms"] < budget * 1000 + 500, report["timings"]
    assert any(f"127.0.0.1:{port}" in e for e in report["errors"]), report["errors"]
    for thread in report["threads"]:
        assert not any(f.get("file") for f in exe_frames(thread, builds["split"]))
        assert thread["stop_reason"].startswith("outermost"), fmt_thread(thread)


def addr2line_chain(exe, rel_pc: int) -> list[tuple[str, str | None, int | None]]:
    """`addr2line -f -i -C` at one address: (function, file, line), innermost
    first. binutils names a function inlined by gcc after its caller
    (`pay` for `checkout`), so inlined functions are named by
    llvm-symbolizer (installed with clang), which names them as gdb does."""
    out = sh("addr2line", "-f", "-i", "-C", "-e", exe, hex(rel_pc)).splitlines()
    names = out[0::2]
    if len(names) > 1:
        llvm = sh("llvm-symbolizer", "-f", "-i", "-C", "-e", exe, hex(rel_pc)).splitlines()
        names = llvm[0::2][:-1] + names[-1:] if len(llvm[0::2]) == len(names) else llvm[0::2]
    chain = []
    for name, place in zip(names, out[1::2]):
        file, _, line = place.rpartition(":")
        line = line.split()[0]
        chain.append((name, None if file == "??" else file,
                      None if line in ("?", "0") else int(line)))
    return chain


def same_name(ours: str, theirs: str) -> bool:
    """The same function, whichever of the two names it qualified: addr2line
    prints a C++ function with its parameters and qualified, llvm-symbolizer
    an inlined one by DW_AT_name (`checkout`), a report qualifies it by its
    namespaces as gdb does (`shop::detail::checkout`; test_cxx_names holds
    the names to addr2line and gdb exactly)."""
    a, b = _bare(ours), _bare(theirs)
    return a == b or a.endswith("::" + b) or b.endswith("::" + a)


def _bare(name: str) -> str:
    """Without its parameter list, and with one spelling of a lambda (c++filt
    `{lambda()#1}`, binutils `'lambda'()`, DWARF `<lambda()>`)."""
    name = re.sub(r"\{lambda\(\)#\d+\}|'lambda'\(\)|<lambda\(\)>", "LAMBDA", name)
    name = name.removesuffix(" const")
    if name.endswith(")") and not name.endswith("operator()"):
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                return name[:i]
    return name


@pytest.mark.parametrize("compiler", ["g++", "clang++"])
def test_attach_names_and_lines_equal_addr2line(compiler, spawn, tmp_path):
    """A -O2 -g build of each compiler (clang's DWARF 5 carries
    .debug_loclists, .debug_rnglists, .debug_addr, .debug_str_offsets),
    attached with the default symbolization: every frame in the
    executable, inlined ones included, is named and placed as addr2line
    names and places it at that frame's lookup address."""
    if shutil.which(compiler) is None or shutil.which("llvm-symbolizer") is None:
        pytest.skip(f"{compiler} or llvm-symbolizer is not installed (scripts/venv test "
                    "installs clang, which brings both)")
    exe = tmp_path / "inline"
    sh(compiler, "-O2", "-g", "-pthread", SOURCE, "-o", exe)
    target = spawn(exe, WORKERS)
    report = attach(target.pid).report
    assert not [e for e in report["errors"] if "DWARF" in e], report["errors"]
    checked = 0
    for thread in report["threads"]:
        frames = exe_frames(thread, exe)
        physical = [i for i, f in enumerate(frames) if not f.get("inlined")]
        start = 0
        for i in physical:
            group = frames[start:i + 1]  # inlined frames, innermost first, then the physical one
            start = i + 1
            own = group[-1]
            at = own["rel_pc"] if thread["frames"].index(own) == 0 else own["rel_pc"] - 1
            want = addr2line_chain(exe, at)
            table = fmt_thread(thread) + f"\naddr2line at {at:#x}: {want}"
            assert [(f.get("file"), f.get("line")) for f in group] == \
                [(file, line) for _, file, line in want], table
            for f, (name, _, _) in zip(group, want):
                assert same_name(f["function"], name), table
            checked += len(group)
    inlined = sum(bool(f.get("inlined")) for t in report["threads"] for f in t["frames"])
    assert checked >= 3 * (WORKERS + 1) and inlined >= WORKERS + 1, fmt_thread(report["threads"][0])
