"""CFI from .debug_frame in a separate debug file: a program built without
.eh_frame for its own code (-fno-asynchronous-unwind-tables, -g), whose
.debug_frame lives only in a file found by build-id or .gnu_debuglink."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from .helpers import collector_argv, collector_env, fmt_thread, names, run_command

FLAGS = ("-O2", "-fomit-frame-pointer", "-fno-asynchronous-unwind-tables",
         "-fno-unwind-tables", "-g")
CHAIN = ["park", "c", "b", "a", "main"]


@pytest.fixture(scope="module")
def split(builder, tmp_path_factory):
    """(stripped exe, debug file, build-id) from chain.c built with only .debug_frame."""
    from conftest import Variant
    built = builder.build("chain.c", Variant("debug-frame-only", FLAGS))
    d = tmp_path_factory.mktemp("debug-frame")
    exe, debug = d / "chain", d / "chain.debug"
    shutil.copy2(built, exe)
    sections = subprocess.run(["readelf", "-SW", str(exe)], capture_output=True, text=True).stdout
    assert ".debug_frame" in sections, sections
    subprocess.run(["objcopy", "--only-keep-debug", str(exe), str(debug)], check=True)
    subprocess.run(["strip", "--strip-debug", str(exe)], check=True)
    sections = subprocess.run(["readelf", "-SW", str(exe)], capture_output=True, text=True).stdout
    assert ".debug_frame" not in sections, "strip left .debug_frame in the program"
    notes = subprocess.run(["readelf", "-n", str(exe)], capture_output=True, text=True).stdout
    build_id = notes.split("Build ID:")[1].split()[0]
    return exe, debug, build_id


def attach(pid, debug_dirs):
    env = collector_env()
    env["COLLECTOR_DEBUG_DIRS"] = str(debug_dirs)
    r = run_command(collector_argv("attach", "--symbolize-budget", "0", pid), env=env)
    assert r.rc == 0 and r.report, str(r)
    return r.report["threads"][0]


def chain_methods(thread) -> list[str]:
    """How each frame of the program's own chain (c, b, a, main) was found:
    the step out of `park` onward needs the program's CFI."""
    ns = names(thread)
    i = ns.index("park")
    return [f["method"] for f in thread["frames"][i + 1:i + len(CHAIN)]]


def test_debug_frame_found_by_build_id(split, spawn, tmp_path):
    exe, debug, build_id = split
    root = tmp_path / "debug"
    (root / ".build-id" / build_id[:2]).mkdir(parents=True)
    shutil.copy2(debug, root / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug")
    t = spawn(exe)
    thread = attach(t.pid, root)
    assert names(thread)[names(thread).index("park"):][:len(CHAIN)] == CHAIN, fmt_thread(thread)
    assert chain_methods(thread) == ["cfi"] * 4, fmt_thread(thread)


def test_debug_frame_found_by_debuglink(split, spawn, tmp_path):
    exe, debug, _ = split
    linked = tmp_path / "chain"
    shutil.copy2(exe, linked)
    shutil.copy2(debug, tmp_path / "chain.debug")
    subprocess.run(["objcopy", f"--add-gnu-debuglink={tmp_path / 'chain.debug'}", str(linked)],
                   check=True, cwd=tmp_path)
    empty = tmp_path / "no-debug-here"
    empty.mkdir()
    t = spawn(linked)
    thread = attach(t.pid, empty)
    assert chain_methods(thread) == ["cfi"] * 4, fmt_thread(thread)


def test_without_the_debug_file_the_program_has_no_cfi(split, spawn, tmp_path):
    """The negative control: the same program with no debug file reachable
    is not unwound by CFI past `park` (fallbacks may still guess)."""
    exe, _, _ = split
    empty = tmp_path / "no-debug-here"
    empty.mkdir()
    t = spawn(exe)
    thread = attach(t.pid, empty)
    assert "cfi" not in chain_methods(thread)[:1], fmt_thread(thread)
