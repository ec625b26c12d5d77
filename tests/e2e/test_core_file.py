"""`collector core FILE` on kernel-written core files, cross-checked against
`eu-stack --core`, and damaged cores (truncated, garbage notes, a stdin
that closes early or stalls): always a report with an error, never a
traceback or a hang."""
from __future__ import annotations

import json
import os
import signal
import shutil
import struct
import subprocess
import tempfile
import time

import pytest

from .corepattern import can_own, crash, crashed_thread, owned_core_pattern, short_tempdir
from .helpers import (collector_argv, collector_env, eu_stack, fmt_thread, have_eu_stack,
                      names, run_command, same_function, schema_errors)


@pytest.fixture(scope="module")
def cores(builder):
    """Kernel-written cores of the 16-thread SIGSEGV and of abort()."""
    if can_own():
        pytest.skip(can_own())
    exe = builder.build("core_crash.c")
    d = short_tempdir()
    out = {}
    with owned_core_pattern(f"{d}/core.%p", pipe_limit=0):
        for mode, argv in (("segv", [exe, "segv", 16]), ("abort", [exe, "abort"])):
            pid = crash(argv)
            out[mode] = (d / f"core.{pid}", exe, pid)
    yield out
    shutil.rmtree(d, ignore_errors=True)


def core_report(path, *args) -> dict:
    # a state directory of its own: storm control would drop the 11th report
    # of one fingerprint (the same core read again) within the minute
    with tempfile.TemporaryDirectory() as state:
        env = dict(collector_env(), COLLECTOR_STATE_DIR=state)
        r = run_command(collector_argv("core", path, "--symbolize-budget", "0", *args), env=env)
    assert r.rc == 0, str(r)
    report = json.loads(r.stdout)
    errs = schema_errors(report)
    assert not errs, "\n".join(errs[:20])
    return report


@pytest.mark.skipif(not have_eu_stack(),
                    reason="eu-stack is not installed (apt-get install elfutils)")
@pytest.mark.parametrize("mode", ["segv", "abort"])
def test_same_frames_as_eu_stack(cores, mode):
    core, exe, pid = cores[mode]
    report = core_report(core)
    assert report["process"]["pid"] == pid and report["errors"] == [], report["errors"]
    same_as_eu_stack(report, core, exe)
    bad = crashed_thread(report)
    assert report["signal"]["number"] == (11 if mode == "segv" else 6)
    assert ("main" in names(bad)) == (mode == "abort"), fmt_thread(bad)


def same_as_eu_stack(report: dict, core, exe) -> None:
    theirs = eu_stack(0, target=("--core", core, "-e", exe))
    assert set(theirs) == {t["tid"] for t in report["threads"]}
    for thread in report["threads"]:
        ours = [(f["pc"], f["function"], f["module"]) for f in thread["frames"]]
        want = theirs[thread["tid"]]
        assert [pc for pc, _, _ in ours] == [pc for pc, _ in want], (
            f"pcs differ from eu-stack's\n{fmt_thread(thread)}\neu-stack: {want}")
        for (pc, name, module), (_, their_name) in zip(ours, want):
            if name and their_name:
                assert same_function(name, their_name, module), (name, their_name)


def load_addresses(core) -> list[tuple[int, int]]:
    """(start, end) of each PT_LOAD of an ELF core."""
    data = core.read_bytes()
    phoff, = struct.unpack_from("<Q", data, 32)
    size, count = struct.unpack_from("<HH", data, 54)
    out = []
    for i in range(count):
        kind, _, _, vaddr, _, _, memsz, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + i * size)
        if kind == 1:
            out.append((vaddr, vaddr + memsz))
    return out


@pytest.mark.skipif(not have_eu_stack() or shutil.which("gdb") is None,
                    reason="needs eu-stack and gdb (apt-get install elfutils gdb)")
def test_a_gdb_gcore_is_read_as_eu_stack_reads_it(builder, spawn, tmp_path):
    """gdb's gcore writes no PT_LOAD for a file mapping the process never
    wrote to (the kernel writes an empty one): the code there is found by
    the core's NT_FILE note and read from the file."""
    exe = builder.build("chain.c")
    target = spawn(exe, 3)
    text = next(int(line.split("-")[0], 16) for line in open(f"/proc/{target.pid}/maps")
                if line.split()[1] == "r-xp" and line.rstrip().endswith(str(exe)))
    core = tmp_path / "core"
    r = subprocess.run(["gdb", "-nx", "-batch", "-p", str(target.pid), "-ex", f"gcore {core}"],
                       capture_output=True, text=True, timeout=120)
    assert core.exists(), r.stdout + r.stderr
    assert not any(start <= text < end for start, end in load_addresses(core)), \
        "this gdb dumped the program's code: the case is not there to test"
    report = core_report(core)
    assert report["errors"] == [], report["errors"]
    same_as_eu_stack(report, core, exe)
    for thread in report["threads"]:
        got = names(thread)
        want = ["c", "b", "a", "main" if thread["tid"] == target.pid else "worker"]
        assert any(got[i:i + 4] == want for i in range(len(got))), fmt_thread(thread)


def test_truncated_core(cores, tmp_path):
    """Cut in the middle of the dumped memory: the report says so, and the
    threads whose stacks came before the cut still unwind."""
    core, _, _ = cores["segv"]
    cut = tmp_path / "cut"
    data = core.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    report = core_report(cut)
    assert any("truncated" in e for e in report["errors"]), report["errors"]
    assert len(report["threads"]) == 16
    assert any(len(t["frames"]) > 3 for t in report["threads"])


def test_truncated_inside_notes(cores, tmp_path):
    core, _, _ = cores["segv"]
    cut = tmp_path / "cut"
    data = core.read_bytes()
    offset, size = _note_segment(data)
    cut.write_bytes(data[:offset + size // 2])
    report = core_report(cut)
    assert report["errors"], "a core cut inside its notes must say so"
    assert any("notes" in e or "truncated" in e for e in report["errors"]), report["errors"]


def _note_segment(data: bytes) -> tuple[int, int]:
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    for i in range(phnum):
        kind, _, offset, _, _, filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + 56 * i)
        if kind == 4:
            return offset, filesz
    raise AssertionError("no PT_NOTE")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_garbage_notes(cores, tmp_path, seed):
    """Notes overwritten with random bytes from the second note on: a
    report with an error, no traceback."""
    import random
    core, _, _ = cores["abort"]
    data = bytearray(core.read_bytes())
    offset, size = _note_segment(data)
    rng = random.Random(seed)
    start = offset + 12 + 8 + 336  # after the first (NT_PRSTATUS) note
    data[start:offset + size] = bytes(rng.getrandbits(8) for _ in range(offset + size - start))
    bad = tmp_path / "garbage"
    bad.write_bytes(bytes(data))
    report = core_report(bad)
    assert report["errors"], "garbage notes must be reported"


def test_not_a_core(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"\x7fELF" + b"\0" * 100)
    r = run_command(collector_argv("core", path))
    assert r.rc == 10 and r.stderr.count("\n") == 1 and "core" in r.stderr, str(r)


def _from_kernel(stdin_source, *extra, timeout=60) -> tuple[dict, float]:
    """Run the pipe-mode handler outside the kernel, its stdin fed by
    `stdin_source` (a Popen's stdout)."""
    out = short_tempdir() / "report.json"
    t0 = time.monotonic()
    proc = subprocess.run(collector_argv("core", "--from-kernel", "--output", out, *extra,
                                         "P=999999999", "s=11"),
                          stdin=stdin_source, capture_output=True, text=True,
                          env=collector_env(), timeout=timeout)
    wall = time.monotonic() - t0
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(out.read_text())
    shutil.rmtree(out.parent)
    assert not schema_errors(report), schema_errors(report)[:10]
    return report, wall


def test_stdin_closes_early(cores):
    core, _, _ = cores["segv"]
    size = core.stat().st_size
    feeder = subprocess.Popen(["head", "-c", str(size // 3), str(core)], stdout=subprocess.PIPE)
    report, _ = _from_kernel(feeder.stdout)
    feeder.wait()
    assert any("ended early" in e for e in report["errors"]), report["errors"]
    assert report["core"]["bytes"] == size // 3
    assert report["signal"]["name"] == "SIGSEGV"
    assert len(report["threads"]) == 16
    assert report["process"]["pid"] == 999999999


def test_stdin_stalls(cores):
    """A writer that stops sending without closing: the handler gives up
    after --idle-timeout and still reports what it has."""
    core, _, _ = cores["abort"]
    script = f"head -c 8192 {core}; sleep 30"
    feeder = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, start_new_session=True)
    try:
        report, wall = _from_kernel(feeder.stdout, "--idle-timeout", "1")
    finally:
        os.killpg(feeder.pid, signal.SIGKILL)
        feeder.wait()
    assert any("stopped arriving" in e for e in report["errors"]), report["errors"]
    assert wall < 25


def test_rebuilt_executable_is_refused(builder, tmp_path):
    """Offline, the executable on disk was rebuilt since the crash: the
    report says which file is not the one that crashed (the build-id in the
    core's dumped ELF header page differs), and does not use it."""
    if can_own():
        pytest.skip(can_own())
    exe = tmp_path / "victim"
    shutil.copy(builder.build("core_crash.c"), exe)
    d = short_tempdir()
    try:
        with owned_core_pattern(f"{d}/core.%p", pipe_limit=0):
            pid = crash([exe, "abort"])
        assert core_report(d / f"core.{pid}")["errors"] == []
        shutil.copy(builder.build("core_crash.c", "O0-fp"), exe)  # another build-id
        report = core_report(d / f"core.{pid}")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert [e for e in report["errors"] if "not the one that crashed" in e and str(exe) in e], \
        report["errors"]
    module = next(m for m in report["modules"] if m["path"] == str(exe))
    assert "in the core" in module["error"] and "another build" in module["error"], module
    assert module["build_id"] is None and "found_by" not in module
    assert not [f for t in report["threads"] for f in t["frames"] if f["module"] == str(exe)
                and f["function"]], "no names from the other build"


def frames_of(report) -> list[list[tuple]]:
    return [[(f["pc"], f["function"], f["method"]) for f in t["frames"]]
            for t in report["threads"]]


@pytest.mark.parametrize("tool,suffix", [("zstd", "zst"), ("xz", "xz"), ("lz4", "lz4")])
def test_compressed_core_as_systemd_coredump_keeps_them(cores, tmp_path, tool, suffix):
    """core.*.zst (and .xz, .lz4) read as a stream, never unpacked to disk:
    the same threads and frames as the plain core, reaching main."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    path, exe, pid = cores["segv"]
    packed = tmp_path / f"core.{pid}.{suffix}"
    with open(packed, "wb") as out:
        subprocess.run([tool, "-c", str(path)], stdout=out, check=True, timeout=120)
    plain = core_report(path)
    report = core_report(packed)
    assert report["core"]["compression"] == tool
    assert report["core"]["compressed_bytes"] == packed.stat().st_size < path.stat().st_size
    assert report["core"]["bytes"] == path.stat().st_size, "decompressed whole, as a stream"
    assert report["core"]["kept_bytes"] < report["core"]["bytes"] // 4
    assert not report["errors"], report["errors"]
    assert frames_of(report) == frames_of(plain)
    assert "main" in names(report["threads"][0]), fmt_thread(report["threads"][0])
    assert sorted(os.listdir(tmp_path)) == [packed.name], "nothing unpacked beside it"


def test_corrupt_compressed_core(cores, tmp_path):
    path, _, _ = cores["segv"]
    packed = tmp_path / "core.zst"
    data = subprocess.run(["zstd", "-c", str(path)], capture_output=True, check=True).stdout
    packed.write_bytes(data[:len(data) // 2])  # cut in the middle: a report with an error
    report = core_report(packed)
    assert any("ended early" in e for e in report["errors"]), report["errors"]
    assert report["threads"], "what arrived is still unwound"
    packed.write_bytes(data[:64])  # cut inside the headers: no core to speak of
    with tempfile.TemporaryDirectory() as state:
        r = run_command(collector_argv("core", packed),
                        env=dict(collector_env(), COLLECTOR_STATE_DIR=state))
    assert r.rc == 10 and "zstd" in r.stderr and r.stderr.count("\n") == 1, str(r)
