"""`collector attach PID` against real parked processes: function names in
order, main reached, for every build variant and for the awkward stacks
(signal handler, vdso, PLT stub, deep recursion), cross-checked against
eu-stack where it is installed.

Every assertion is about a property of a real process: no address is
hard-coded; addresses are checked against what /proc and the ELF files say.
"""
from __future__ import annotations

import os
import sys
import time

import pytest

from .helpers import (assert_chain, assert_frame_invariants, assert_thread_order, build_id,
                      cross_check_eu_stack, debug_file_for, fmt_thread, have_eu_stack, load_bias,
                      names, norm, physical, same_function, same_path, section_ranges,
                      proc_state, run_command, thread_by_tid, threads_by_name)
from elftools.elf.elffile import ELFFile

CHAIN = ["park", "c", "b", "a"]


def exe_symbols(path) -> dict[str, tuple[int, int]]:
    """Function symbols of our own executable, name -> (link-time address, size)."""
    out = {}
    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".symtab")
        if sec is not None:
            for s in sec.iter_symbols():
                if s["st_info"]["type"] == "STT_FUNC" and s["st_value"]:
                    out[s.name] = (s["st_value"], s["st_size"])
    return out


def assert_offsets(thread: dict, exe, syms: dict[str, tuple[int, int]]):
    """For frames in our executable, function+offset must point at the same
    link-time address as rel_pc (rel_pc - offset == the symbol's address),
    and lie inside the function (offset < size; <= size for a return
    address, which may be just past a call at the very end)."""
    for f in physical(thread["frames"]):
        if same_path(f["module"], exe) and f["function"] in syms:
            addr, size = syms[f["function"]]
            assert f["offset"] is not None and f["rel_pc"] is not None, fmt_thread(thread)
            assert f["rel_pc"] - f["offset"] == addr, (
                f"#{f['index']} {f['function']}+{f['offset']:#x}: rel_pc {f['rel_pc']:#x} "
                f"does not match the symbol at {addr:#x}\n{fmt_thread(thread)}")
            if size:
                limit = size if f["index"] == 0 else size + 1
                assert f["offset"] < limit, (
                    f"#{f['index']} {f['function']}+{f['offset']:#x} is past the end of "
                    f"{f['function']} (size {size:#x}): the pc is in no function\n{fmt_thread(thread)}")


def assert_exe_frames_match_file(report: dict, pid: int, exe):
    """Frames and the module list agree with the executable on disk: same
    build-id, and pc - rel_pc is the load bias computed from /proc/PID/maps
    (0 for a non-PIE executable)."""
    bid = build_id(exe)
    bias = load_bias(pid, exe)
    mods = [m for m in report["modules"] if same_path(m["path"], exe)]
    assert mods, f"executable {exe} missing from modules: {[m['path'] for m in report['modules']]}"
    for m in mods:
        assert m["build_id"] == bid, f"module build_id {m['build_id']} != file's {bid}"
        assert m["load_bias"] == bias, f"module load_bias {m['load_bias']:#x} != {bias:#x}"
    seen = 0
    for t in report["threads"]:
        for f in t["frames"]:
            if same_path(f["module"], exe):
                seen += 1
                assert f["build_id"] == bid, fmt_thread(t)
                assert f["pc"] - f["rel_pc"] == bias, (
                    f"#{f['index']}: pc - rel_pc = {f['pc'] - f['rel_pc']:#x}, load bias is "
                    f"{bias:#x}\n{fmt_thread(t)}")
    assert seen, "no frame is in the executable"


def attach_ok(collector, pid, *args):
    r = collector("attach", pid, *args)
    assert r.rc == 0, str(r)
    assert r.report["process"]["pid"] == pid
    assert r.report["source"] == "attach"
    return r.report


# --------------------------------------------------------------- chains


@pytest.mark.parametrize("variant", ["O0-fp", "O2-nofp", "pie", "nopie", "stripped", "static"])
def test_chain_every_build(builder, spawn, collector, variant):
    """main + 3 workers parked in main|worker -> a -> b -> c -> park."""
    exe = builder.build("chain.c", variant)
    t = spawn(exe, 3)
    comm = {tid: open(f"/proc/{t.pid}/task/{tid}/comm").read().strip() for tid in t.tids()}
    report = attach_ok(collector, t.pid)

    assert_thread_order(report, t.pid)
    assert sorted(th["tid"] for th in report["threads"]) == sorted(comm), "not every thread reported"
    for th in report["threads"]:
        assert th["name"] == comm[th["tid"]], fmt_thread(th)
        assert th["state"] == "S", fmt_thread(th)
        assert_frame_invariants(th)
    assert_exe_frames_match_file(report, t.pid, exe)

    main = thread_by_tid(report, t.pid)
    workers = [th for th in report["threads"] if th["tid"] != t.pid]
    assert sorted(w["name"] for w in workers) == ["w1", "w2", "w3"]

    if variant == "stripped":
        # The executable has no symbols left: its frames cannot be named.
        # What we assert instead: right under libc's pause wrapper come
        # exactly 5 frames in the executable (park c b a main|worker, with
        # no name: a name here could only be a wrong one), then libc; for the
        # main thread the walk goes on through libc's start code, which is
        # named from libc's .dynsym (__libc_start_main).
        for th in report["threads"]:
            real = physical(th["frames"])
            in_exe = [same_path(f["module"], exe) for f in real]
            assert True in in_exe, fmt_thread(th)
            i = in_exe.index(True)
            assert 1 <= i <= 3, f"expected libc's pause above the executable's frames\n{fmt_thread(th)}"
            run = 0
            while i + run < len(in_exe) and in_exe[i + run]:
                run += 1
            assert run == 5, f"expected 5 frames in the stripped executable, got {run}\n{fmt_thread(th)}"
            for f in real[i:i + 5]:
                assert f["function"] is None, f"stripped frame has a name\n{fmt_thread(th)}"
            assert len(real) > i + 5, f"walk stopped in the executable\n{fmt_thread(th)}"
            assert "libc" in os.path.basename(real[i + 5]["module"] or ""), fmt_thread(th)
        assert any(f["function"] and same_function(f["function"], "__libc_start_main", f["module"])
                   for f in main["frames"]), (
            f"main thread does not reach libc's start code (__libc_start_main or an alias)\n"
            f"{fmt_thread(main)}")
    else:
        syms = exe_symbols(exe)
        assert_chain(main, CHAIN + ["main"])
        for w in workers:
            assert_chain(w, CHAIN + ["worker"])
        for th in report["threads"]:
            assert_offsets(th, exe, syms)
        if variant == "static":
            for th in report["threads"]:
                for f in th["frames"]:
                    assert same_path(f["module"], exe), f"static: frame outside the exe\n{fmt_thread(th)}"

    if have_eu_stack():
        cross_check_eu_stack(report, t.pid)


def test_chain_single_thread(builder, spawn, collector):
    exe = builder.build("chain.c")
    t = spawn(exe)
    report = attach_ok(collector, t.pid)
    assert [th["tid"] for th in report["threads"]] == [t.pid]
    main = report["threads"][0]
    assert_frame_invariants(main)
    assert_chain(main, CHAIN + ["main"])
    if have_eu_stack():
        cross_check_eu_stack(report, t.pid)


# Run as `collector attach` is, with the first PTRACE_SEIZE noting which
# modules are loaded by then (ptrace_func is imported first so that it can
# be watched: it is on the way to the first stop anyway).
FIRST_STOP_WATCH = """
import sys
from collector.targets import ptrace_func
real, seen = ptrace_func.ptrace, []
def watched(request, *args):
    if request == 0x4206 and not seen:
        seen.append(sorted(sys.modules))
        print(" ".join(seen[0]), file=sys.stderr)
    return real(request, *args)
ptrace_func.ptrace = watched
from collector.__main__ import main
sys.exit(main())
"""
HEAVY = ("dataclasses", "inspect", "typing", "json", "socket", "sqlite3", "tomllib", "psutil",
         "elftools", "structlog", "collector.delivery.deliver", "collector.logging",
         "unwinder.modules", "unwinder.walk", "unwinder.cfi", "collector.collect")


# `attach PID` alone is stopped before its command line is parsed
QUICK_HEAVY = ("argparse", "re", "enum", "signal", "locale", "collections", "collector.cli",
               "collector.config")


@pytest.mark.parametrize("words, heavy", [
    (["--no-service"], HEAVY + QUICK_HEAVY),
    (["--no-service", "--max-frames", "1000"], HEAVY)], ids=["quick", "parsed"])
def test_nothing_heavy_is_loaded_before_the_first_stop(builder, spawn, words, heavy):
    """The first thread is stopped before the engine, the configuration,
    delivery, json or any third-party module is imported (issue 13's cold
    start diet), and for `attach PID` before even argparse or re; the
    report is still whole."""
    t = spawn(builder.build("depth.c"))
    r = run_command([sys.executable, "-c", FIRST_STOP_WATCH, "attach", *words, str(t.pid)])
    assert r.rc == 0, str(r)
    loaded = set(r.stderr.split())
    assert "collector.targets.live" in loaded, r.stderr
    assert sorted(m for m in loaded if m in heavy or m.split(".")[0] in heavy) == []
    assert len(r.report["threads"]) == 17 and all(th["frames"] for th in r.report["threads"])


def test_sixteen_threads_at_different_depths(builder, spawn, collector):
    """Thread dNN is parked under exactly NN frames of depth()."""
    exe = builder.build("depth.c")
    t = spawn(exe)
    report = attach_ok(collector, t.pid)
    assert_thread_order(report, t.pid)
    by_name = threads_by_name(report)
    want = {f"d{i:02d}": i for i in range(1, 17)}
    assert set(want) <= set(by_name), f"thread names: {sorted(by_name)}"
    for name, depth in want.items():
        th = by_name[name]
        assert_frame_invariants(th)
        assert_chain(th, ["park"] + ["depth"] * depth + ["depth_thread"])
        assert names(th).count("depth") == depth, fmt_thread(th)
    main = thread_by_tid(report, t.pid)
    assert_chain(main, CHAIN + ["main"])
    if have_eu_stack():
        cross_check_eu_stack(report, t.pid)


# --------------------------------------------------------- signal handler


def test_signal_handler_frame(builder, spawn, collector):
    """main is parked inside a SIGUSR1 handler that interrupted spin():
    park <- in_handler <- on_signal <- __restore_rt <- spin <- sig_b <- sig_a
    <- main. The trampoline frame's pc is the sa_restorer libc installed."""
    exe = builder.build("signal.c")
    t = spawn(exe)
    restorer = int(t.wait_line(r"restorer (0x[0-9a-f]+)").group(1), 16)
    report = attach_ok(collector, t.pid)
    main = thread_by_tid(report, t.pid)
    for th in report["threads"]:
        assert_frame_invariants(th)

    i = assert_chain(main, ["park", "in_handler", "on_signal"])
    tramp = main["frames"][i + 3] if len(main["frames"]) > i + 3 else None
    assert tramp is not None, f"walk stopped in the handler\n{fmt_thread(main)}"
    assert tramp["pc"] == restorer, (
        f"frame after the handler is not the signal trampoline {restorer:#x}\n{fmt_thread(main)}")
    libc = tramp["module"]
    # libc.so.6 has no .symtab; __restore_rt is a local symbol that only the
    # separate debug file (libc6-dbg) names -- as eu-stack and gdb show it.
    if tramp["function"] is not None or (libc and debug_file_for(libc)):
        assert tramp["function"] == "__restore_rt", fmt_thread(main)
    after = names(main)[i + 4:]
    assert after[:4] == ["spin", "sig_b", "sig_a", "main"], (
        f"signal frame does not lead back to the interrupted spin() and on to main\n{fmt_thread(main)}")

    killer = threads_by_name(report)["killer"]
    assert_chain(killer, ["park", "killer"])
    if have_eu_stack():
        cross_check_eu_stack(report, t.pid)


# ------------------------------------------------------------------- vdso


def vdso_range(pid: int) -> tuple[int, int]:
    for line in open(f"/proc/{pid}/maps"):
        if line.rstrip().endswith("[vdso]"):
            lo, hi = line.split()[0].split("-")
            return int(lo, 16), int(hi, 16)
    pytest.skip("the target has no [vdso] mapping")


def test_vdso_frame_zero(builder, spawn, collector):
    """main spins in clock_gettime: attach until frame 0 is in the vdso, then
    the walk must get out of it, through libc's clock_gettime, to main."""
    exe = builder.build("vdso.c")
    t = spawn(exe, parked=None)
    lo, hi = vdso_range(t.pid)
    tries = 12
    for attempt in range(tries):
        report = attach_ok(collector, t.pid)
        main = thread_by_tid(report, t.pid)
        assert_frame_invariants(main)
        # wherever it was caught, the spinning loop and its callers are there
        ns = names(main)
        assert "vd_spin" in ns, fmt_thread(main)
        k = ns.index("vd_spin")
        assert ns[k:k + 4] == ["vd_spin", "vd_b", "vd_a", "main"], fmt_thread(main)
        f0 = main["frames"][0]
        if not lo <= f0["pc"] < hi:
            continue
        assert f0["module"] == "[vdso]", f"frame 0 pc is in the vdso, module says {f0['module']!r}\n" + fmt_thread(main)
        real = physical(main["frames"])
        vd = [f for f in real if f["module"] == "[vdso]"]
        out = real[len(vd)]
        assert out["module"] and "libc" in os.path.basename(out["module"]), (
            f"the frame under the vdso should be libc's clock_gettime\n{fmt_thread(main)}")
        if out["function"]:
            assert same_function(out["function"], "clock_gettime", out["module"]), fmt_thread(main)
        assert norm(real[len(vd) + 1]["function"]) == "vd_spin", (
            f"unexpected frames between the vdso and vd_spin\n{fmt_thread(main)}")
        print(f"caught in the vdso on attempt {attempt + 1}\n{fmt_thread(main)}")
        return
    pytest.skip(f"frame 0 was never in the vdso in {tries} attaches (the thread was always caught "
                f"elsewhere in its loop); the unwinds themselves were checked")


# -------------------------------------------------------------------- PLT


def test_plt_stub_frame_zero(builder, spawn, collector):
    """Two threads spin calling plt_callee through the PLT: attach until
    frame 0 is on a PLT stub (range from `readelf -SW`), then the walk must
    go from the stub to plt_spin (the caller: the return address is at [rsp])
    and on to main / plt_worker."""
    exe = builder.build_plt()
    t = spawn(exe, parked=None)
    plt = section_ranges(exe, {".plt", ".plt.sec", ".plt.got"})
    assert ".plt" in plt, f"no .plt section in {exe}"
    bias = load_bias(t.pid, exe)
    roots = {t.pid: "main"}
    tries = 25
    for attempt in range(tries):
        report = attach_ok(collector, t.pid)
        hits = []
        for th in report["threads"]:
            assert_frame_invariants(th)
            root = roots.get(th["tid"], "plt_worker")
            ns = names(th)
            assert "plt_spin" in ns, fmt_thread(th)
            k = ns.index("plt_spin")
            assert ns[k:k + 4] == ["plt_spin", "plt_b", "plt_a", root], fmt_thread(th)
            rel = th["frames"][0]["pc"] - bias
            section = next((s for s, (a, b) in plt.items() if a <= rel < b), None)
            if section:
                hits.append((th, section))
        for th, section in hits:
            f0 = th["frames"][0]
            assert same_path(f0["module"], exe), fmt_thread(th)
            assert f0["rel_pc"] == f0["pc"] - bias, fmt_thread(th)
            # a PLT stub belongs to no function symbol: no name, or a
            # synthetic `callee@plt` one -- never the preceding symbol's
            assert f0["function"] is None or f0["function"].endswith("@plt"), (
                f"PLT stub frame misnamed {f0['function']!r}\n{fmt_thread(th)}")
            syms = exe_symbols(exe)
            assert_offsets(th, exe, syms)
            assert names(th)[1] == "plt_spin", (
                f"frame 0 is on a {section} stub; frame 1 must be its caller plt_spin\n{fmt_thread(th)}")
            assert th["frames"][1]["method"] == "cfi", fmt_thread(th)
        if hits:
            print(f"caught on a PLT stub on attempt {attempt + 1}\n"
                  + "\n".join(fmt_thread(th) for th, _ in hits))
            return
    pytest.skip(f"frame 0 was never on a PLT stub ({plt}) in {tries} attaches of 2 spinning "
                f"threads; the unwinds themselves were checked")


# -------------------------------------------------------------- recursion


def test_deep_recursion(builder, spawn, collector):
    """5,000 frames of rec() under main; plus the frame cap: none by default,
    --max-frames N gives exactly N frames and a stop reason."""
    depth = 5000
    exe = builder.build("recurse.c")
    t = spawn(exe, depth)
    report = attach_ok(collector, t.pid, "--max-frames", 6000)
    main = report["threads"][0]
    assert_frame_invariants(main)
    ns = names(main)
    assert ns.count("rec") == depth, f"{ns.count('rec')} rec frames, expected {depth}"
    assert_chain(main, ["park"] + ["rec"] * depth + ["main"])
    if have_eu_stack():
        cross_check_eu_stack(report, t.pid, max_frames=6000)

    capped = attach_ok(collector, t.pid, "--max-frames", 100)["threads"][0]
    assert len(capped["frames"]) == 100, f"--max-frames 100 gave {len(capped['frames'])} frames"
    assert capped["stop_reason"], "a capped walk must say why it stopped"
    assert [f["pc"] for f in capped["frames"]] == [f["pc"] for f in main["frames"][:100]]

    default = attach_ok(collector, t.pid)["threads"][0]
    assert [f["pc"] for f in default["frames"]] == [f["pc"] for f in main["frames"]]

    # a stack window far smaller than the stack: what lies beyond the copy is
    # read from the running process after release, counted and said; the
    # (parked, unchanging) stack still gives the same frames
    small = attach_ok(collector, t.pid, "--max-frames", 6000, "--stack-window", "4K")
    assert small["snapshot"]["late_reads"] > 0, small["snapshot"]
    assert small["snapshot"]["bytes_copied"] < report["snapshot"]["bytes_copied"]
    assert any("late" in e or "outside the stack copies" in e for e in small["errors"]), small["errors"]
    assert [f["pc"] for f in small["threads"][0]["frames"]] == [f["pc"] for f in main["frames"]]
    assert report["snapshot"]["late_reads"] == 0, report["snapshot"]


def test_main_thread_gone_with_pthread_exit(builder, spawn, collector):
    """A process whose main thread called pthread_exit: /proc/PID says zombie,
    but its worker runs on and is reported (eu-stack gives up on such a pid);
    the gone main thread is named in errors, not reported as a thread."""
    t = spawn(builder.build("leader_exit.c"), parked=None)
    deadline = time.monotonic() + 5  # "ready" comes just before pthread_exit
    while proc_state(t.pid) != "Z":
        assert time.monotonic() < deadline, "the main thread never exited"
        time.sleep(0.01)
    r = collector("attach", t.pid)
    assert r.rc == 0, str(r)
    assert [th["tid"] for th in r.report["threads"]] != [t.pid]
    assert len(r.report["threads"]) == 1, r.report["threads"]
    assert_chain(r.report["threads"][0], ["park", "c", "b", "a", "worker"])
    assert any(str(t.pid) in e and "exited" in e for e in r.report["errors"]), r.report["errors"]


def test_deleted_executable_is_read_through_map_files(builder, spawn, collector, tmp_path):
    """The program's file is deleted (or replaced) after it started: its
    code is still read, through /proc/PID/map_files, and named."""
    exe = tmp_path / "chain"
    exe.write_bytes(builder.build("chain.c").read_bytes())
    exe.chmod(0o755)
    t = spawn(exe)
    exe.unlink()
    exe.write_bytes(b"not the program any more\n")  # a different file at the same path
    r = collector("attach", t.pid)
    assert r.rc == 0, str(r)
    main = r.report["threads"][0]
    assert_chain(main, ["park", "c", "b", "a", "main"])
    module = next(f["module"] for f in main["frames"] if norm(f["function"]) == "main")
    assert module.endswith("(deleted)"), module
