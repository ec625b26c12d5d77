"""Hostile input through the command line: a core whose file list (NT_FILE)
names a FIFO, a device, a directory or a symlink to one; cores with bits
flipped, cut short or with huge sizes; a running process whose executable
has broken DWARF and section headers; names that carry control characters;
malformed reports given to `collector symbolize`. Every run ends within its
budget with a report or a documented exit code, never an internal error.
A short sample: scripts/fuzz runs the long campaign."""
from __future__ import annotations

import json
import os
import random
import shutil
import stat
import time

import pytest

from .corepattern import can_own, crash, owned_core_pattern, short_tempdir
from .helpers import collector_argv, collector_env, run_command, schema_errors
from .mutate import ELF_DAMAGE, damage_elf, file_paths, mutate_core, with_file_paths

BUDGET = 30.0  # seconds a run may take (a FIFO that blocks would hang forever)
DOCUMENTED = {0, 2, 10}  # a report; usage error; not a core file


@pytest.fixture(scope="module")
def core(builder, tmp_path_factory):
    """A kernel-written core of core_crash (4 threads, SIGSEGV), and its executable."""
    if can_own():
        pytest.skip(can_own())
    exe = builder.build("core_crash.c")
    d = short_tempdir()
    with owned_core_pattern(f"{d}/core.%p", pipe_limit=0):
        pid = crash([exe, "segv", 4])
    path = tmp_path_factory.mktemp("core") / "core"
    shutil.move(d / f"core.{pid}", path)
    shutil.rmtree(d, ignore_errors=True)
    return path.read_bytes(), str(exe)


def run_core(path, *args, env=None):
    """`collector core PATH` with symbolization (it opens files the core names too)."""
    t0 = time.monotonic()
    with_env = dict(env or collector_env(), COLLECTOR_STATE_DIR=str(short_tempdir()))
    r = run_command(collector_argv("core", path, "--symbolize-budget", "5", *args),
                    timeout=BUDGET, env=with_env)
    shutil.rmtree(with_env["COLLECTOR_STATE_DIR"], ignore_errors=True)
    if r.rc == 0:
        r.report = json.loads(r.stdout)
    return r, time.monotonic() - t0


def assert_clean(r, what: str):
    assert r.rc in DOCUMENTED, f"{what}: {r}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, f"{what}: {r}"
    if r.rc == 0:
        assert not schema_errors(r.report), f"{what}: {schema_errors(r.report)[:5]}"
    else:
        assert r.stderr.count("\n") == 1, f"{what}: one line on stderr: {r}"


def special_file(kind: str, where) -> str:
    path = where / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "device":
        return "/dev/zero"  # reads never end: must not be read at all
    elif kind == "symlink-to-fifo":
        os.mkfifo(where / "target-fifo")
        path.symlink_to(where / "target-fifo")
    elif kind == "symlink-to-device":
        path.symlink_to("/dev/zero")
    return str(path)


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "symlink-to-fifo",
                                  "symlink-to-device"])
def test_file_list_names_a_special_file(core, tmp_path, kind):
    """Every path in NT_FILE (the executable and libc included) replaced by
    one special file: the report comes, each module says why it has no file."""
    data, exe = core
    special = special_file(kind, tmp_path)
    bad = tmp_path / "core"
    bad.write_bytes(with_file_paths(data, lambda p: special))
    assert set(file_paths(bad.read_bytes())) == {special}
    r, took = run_core(bad)
    assert r.rc == 0, str(r)
    assert_clean(r, kind)
    assert took < BUDGET
    modules = [m for m in r.report["modules"] if m["path"] == special]
    assert modules and all(m.get("error") for m in modules), r.report["modules"]
    assert r.report["signal"]["name"] == "SIGSEGV" and len(r.report["threads"]) == 4
    if kind in ("fifo", "symlink-to-fifo"):
        fifo = tmp_path / ("fifo" if kind == "fifo" else "target-fifo")
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_file_list_rewritten_still_reads(core, tmp_path):
    """The rewriting itself keeps the core good: the same paths, the same report."""
    data, exe = core
    same = tmp_path / "core"
    same.write_bytes(with_file_paths(data, lambda p: p + "\0"[:0]))
    r, _ = run_core(same)
    assert r.rc == 0 and r.report["errors"] == [], str(r)
    assert exe in file_paths(data)


@pytest.mark.parametrize("seed", range(8))
def test_mutated_core(core, tmp_path, seed):
    data, _ = core
    rng = random.Random(seed)
    what, bad = mutate_core(data, rng)
    path = tmp_path / "core"
    path.write_bytes(bad)
    r, took = run_core(path)
    assert_clean(r, f"seed {seed}: {what}")
    assert took < BUDGET


@pytest.fixture(scope="module")
def debug_exe(builder):
    return builder.build("chain.c", "O2-nofp", extra=("-g",))


@pytest.mark.parametrize("how", ELF_DAMAGE)
def test_live_target_with_broken_elf(debug_exe, tmp_path, spawn, how):
    """A copy of a -g fixture with its DWARF, section headers or unwind
    index broken, running: attach with the default symbolization gives a
    report; what could not be read is an error on that module."""
    exe = tmp_path / "chain"
    exe.write_bytes(damage_elf(debug_exe.read_bytes(), how, random.Random(how)))
    exe.chmod(0o755)
    target = spawn(exe, 1)
    t0 = time.monotonic()
    r = run_command(collector_argv("attach", target.pid), timeout=BUDGET)
    assert r.rc == 0, f"{how}: {r}"
    assert_clean(r, how)
    assert time.monotonic() - t0 < BUDGET
    main = r.report["threads"][0]
    assert main["frames"] and main["frames"][0]["module"], main


def test_text_output_of_forged_names(builder, tmp_path, spawn):
    """An executable named with ESC, BEL, CR and a newline (which its
    process and thread names inherit): --format text prints them escaped."""
    name = "x\x1b[2J\x07\r\nTID 1 \"forged\":"
    exe = tmp_path / name
    shutil.copy(builder.build("chain.c"), exe)
    target = spawn(exe, 1)
    r = run_command(collector_argv("attach", "--format", "text", target.pid), timeout=BUDGET)
    assert r.rc == 0, str(r)
    assert not any(ord(c) < 0x20 for c in r.text.replace("\n", "")), repr(r.text)
    headers = [line for line in r.text.splitlines() if line.startswith("TID ")]
    assert len(headers) == 2, r.text  # the main thread and its worker, nothing forged
    assert "x\\x1b[2J\\x07\\r\\nTID 1" in r.text.splitlines()[0], r.text


@pytest.mark.parametrize("content, rc, says", [
    (b"[" * 200000 + b"]" * 200000, 2, "nests too deeply"),
    (b'{"threads":[{"frames":[{"pc":Infinity}]}]}', 2, "Infinity"),
    (b'{"threads":[{"frames":[{"pc":"0x1","function":7,"offset":[]}]}],"process":3}', 0, None),
])
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_symbolize_malformed_report(tmp_path, content, rc, says, fmt):
    path = tmp_path / "r.json"
    path.write_bytes(content)
    r = run_command(collector_argv("symbolize", "--format", fmt, path), timeout=BUDGET)
    if r.rc == 0 and fmt == "json":
        r.report = json.loads(r.stdout)
    elif r.rc == 0:
        r.text = r.stdout
    assert r.rc == rc and "internal error" not in r.stderr, str(r)
    if says:
        assert says in r.stderr and r.stderr.count("\n") == 1, str(r)
    elif fmt == "json":
        assert len([e for e in r.report["errors"] if e.endswith("dropped")]) == 4, r.report
    else:
        assert "error: report.process is not an object: dropped" in r.text, r.text
