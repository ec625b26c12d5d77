"""The long hostile-input campaign (run by scripts/fuzz; the suite runs a
short sample of the same doors and cases).

In process, each parser's door is fed mutations of real inputs: the ELF
reader (/bin/true, a -g fixture), the CFI decoder and evaluator (libc's
.eh_frame), the core parser from a file and streamed (a synthetic core
with a file list), DWARF lines (gcc and clang -g fixtures), and the report
`collector symbolize` reads. The doors are the test suite's own functions:
each lets through only the project's error classes, so any other exception
is a finding, counted by type and saved under --out.

Through the command line: mutated kernel cores, file lists naming special
files, and malformed reports (`collector core`, `collector symbolize`),
and running targets with broken DWARF (`collector attach`). A run that
exits with an undocumented code, prints an internal error or outlives its
budget is a finding.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "unit")]

from tests.e2e import mutate  # noqa: E402

DOCUMENTED = {0, 2, 10}
SHARES = {"elf": 0.35, "cfi": 0.3, "core": 0.15, "report": 0.12, "lines": 0.08}


def mutations(seed: bytes, rng: random.Random, start: int = 0, end: int | None = None,
              cut: bool = True) -> bytes:
    """Bytes flipped or overwritten, a huge value planted, or a cut."""
    end = len(seed) if end is None else end
    kind = rng.randrange(4 if cut else 3)
    if kind == 0:
        return mutate.flip_bits(seed, rng, rng.randint(1, 16), start, end)
    out = bytearray(seed)
    if kind == 1:
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(start, end)] = rng.randrange(256)
    elif kind == 2:
        at = rng.randrange(start, max(start + 1, end - 8))
        out[at:at + 8] = rng.choice(mutate.HUGE).to_bytes(8, "little")
    else:
        del out[rng.randrange(start, end):]
    return bytes(out)


def build(cc: str, source: str, out: Path, *flags: str) -> Path:
    subprocess.run([cc, "-pthread", *flags, "-I", str(REPO / "tests" / "fixtures"),
                    str(REPO / "tests" / "fixtures" / source), "-o", str(out)], check=True)
    return out


class Doors:
    """In-process doors: name -> (input maker, door function)."""

    def __init__(self, work: Path):
        import test_cfi_fuzz as cfi
        import test_core_parse as core
        import test_elf as elf
        import test_lines as lines
        import test_report_input as report
        from unwinder.cfi import CfiTable
        self.work = work
        true = Path("/bin/true").read_bytes()
        gcc = build("gcc", "lines.c", work / "lines-gcc", "-O2", "-g")
        clang = build("clang", "lines.c", work / "lines-clang", "-O2", "-g") \
            if shutil.which("clang") else gcc
        self.elf_seeds = [true, gcc.read_bytes()]
        eh_addr, prefix = cfi._libc_prefix()
        self.core_seeds = [core.with_files(), core.three_threads()]
        self.dwarf = [(p.read_bytes(), lines.instructions(p)[::9]) for p in (gcc, clang)]
        self.report = json.dumps(report.REPORT).encode()
        regs = {7: 0x8000, 6: 0x7800, 16: 0x26010}
        self.table = {
            "elf": (lambda rng: self._pick(rng, self.elf_seeds), elf.use),
            "cfi": (lambda rng: mutations(prefix, rng),
                    lambda data: cfi.lookups(CfiTable.from_eh_frame(data, eh_addr),
                                             [0x26000 + i * 0x400 for i in range(8)], regs)),
            "core": (lambda rng: self._pick(rng, self.core_seeds),
                     lambda data: core.both_doors(data, str(work / "core"))),
            "lines": (self._dwarf_input, lambda pair: lines.only_line_errors(*pair)),
            "report": (lambda rng: mutations(self.report, rng), report.through),
        }

    def _pick(self, rng, seeds):
        return mutations(rng.choice(seeds), rng)

    def _dwarf_input(self, rng):
        data, addrs = rng.choice(self.dwarf)
        headers = mutate.section_headers(data)
        name = rng.choice([n for n in headers if n.startswith(".debug_")])
        if rng.random() < 0.2:  # the section header itself
            return mutations(data, rng, headers[name], headers[name] + 64, cut=False), addrs
        offset, size = struct.unpack_from("<QQ", data, headers[name] + 24)
        return mutations(data, rng, offset, offset + max(size, 1), cut=False), addrs


def run_doors(doors: Doors, total: int, seconds: float, rng, out: Path, findings) -> dict:
    counts = collections.Counter()
    deadline = time.monotonic() + seconds
    plan = [name for name, share in SHARES.items() for _ in range(round(share * 100))]
    while sum(counts.values()) < total and time.monotonic() < deadline:
        name = rng.choice(plan)
        make, door = doors.table[name]
        data = make(rng)
        counts[name] += 1
        try:
            door(data)
        except Exception as e:  # a finding: anything but the project's errors
            findings[f"{name}: {type(e).__name__}"] += 1
            if findings[f"{name}: {type(e).__name__}"] <= 3:
                path = out / f"{name}-{sum(counts.values())}"
                path.write_bytes(data if isinstance(data, bytes) else data[0])
                path.with_suffix(".txt").write_text(traceback.format_exc())
    return counts


def collector(*args, timeout: float, env: dict) -> tuple[int | None, str, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "collector", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        return None, "timed out", time.monotonic() - t0
    return proc.returncode, err.decode(errors="replace"), time.monotonic() - t0


def run_cli(runs: int, seconds: float, budget: float, report: bytes, core: bytes | None,
            skip_core: bool, rng, out: Path, findings) -> int:
    from tests.e2e.corepattern import can_own, crash, owned_core_pattern, short_tempdir
    work = Path(tempfile.mkdtemp(prefix="fuzz-cli-"))
    env = dict(os.environ, PYTHONPATH=str(REPO), COLLECTOR_STATE_DIR=str(work / "state"))
    env.pop("DEBUGINFOD_URLS", None)
    crasher = build("gcc", "core_crash.c", work / "core_crash-fuzz", "-O2", "-g")
    target = build("gcc", "chain.c", work / "chain", "-O2", "-g")
    t0 = time.monotonic()
    if core is None and not can_own() and not skip_core:  # waits while another suite owns it
        d = short_tempdir()
        with owned_core_pattern(f"{d}/core.%p", pipe_limit=0):
            core = (d / f"core.{crash([crasher, 'segv', 4])}").read_bytes()
        shutil.rmtree(d, ignore_errors=True)
        print(f"kernel core written in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    elif core is None:
        print(f"no core: {'--core none' if skip_core else can_own()}", file=sys.stderr)
    kinds = (["core", "core", "file-list"] if core else []) + ["attach", "report"]
    deadline = time.monotonic() + seconds
    done, slowest, per_kind = 0, (0.0, ""), collections.Counter()
    while done < runs and time.monotonic() < deadline:
        kind = rng.choice(kinds)
        what, argv, proc = kind, None, None
        path = work / "input"
        if kind == "core":
            what, data = mutate.mutate_core(core, rng)
            path.write_bytes(data)
            argv = ("core", path, "--symbolize-budget", "5")
        elif kind == "file-list":
            special = rng.choice(["/dev/zero", "/dev/null", "/tmp", str(work / "fifo")])
            if not os.path.exists(work / "fifo"):
                os.mkfifo(work / "fifo")
            path.write_bytes(mutate.with_file_paths(core, lambda p: special))
            what, argv = f"file list -> {special}", ("core", path, "--symbolize-budget", "5")
        elif kind == "attach":
            how = rng.choice(mutate.ELF_DAMAGE)
            exe = work / "damaged"
            exe.write_bytes(mutate.damage_elf(target.read_bytes(), how, rng))
            exe.chmod(0o755)
            proc = subprocess.Popen([exe, "1"], stdout=subprocess.PIPE)
            proc.stdout.readline()  # "ready"
            what, argv = f"attach: {how}", ("attach", proc.pid)
        else:
            what, data = "report", mutations(report, rng)
            path.write_bytes(data)
            argv = ("symbolize", "--format", rng.choice(["json", "text"]), path)
        rc, err, took = collector(*argv, timeout=budget, env=env)
        slowest = max(slowest, (took, what))
        if proc is not None:
            proc.kill()
            proc.wait()
        done += 1
        per_kind[kind] += 1
        bad = rc not in DOCUMENTED or "internal error" in err or "Traceback" in err
        if bad:
            key = f"cli {kind}: rc={rc}"
            findings[key] += 1
            if findings[key] <= 3:
                shutil.copy(exe if kind == "attach" else path, out / f"cli-{done}")
                (out / f"cli-{done}.txt").write_text(f"{what}\n{argv}\n{err}")
    shutil.rmtree(work, ignore_errors=True)
    print("command-line runs by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(per_kind.items()))
          + f"; slowest {slowest[0]:.1f} s ({slowest[1]})", file=sys.stderr)
    return done


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=100_000, help="in-process inputs (100000)")
    p.add_argument("--cli-runs", type=int, default=300, help="command-line runs (300)")
    p.add_argument("--minutes", type=float, default=30, help="stop each part after this long")
    p.add_argument("--budget", type=float, default=30, help="seconds one command may take")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--core", help="a kernel-written core to damage, or `none` (default: "
                   "crash a fixture under a core_pattern of our own, which needs root)")
    p.add_argument("--out", default="fuzz-findings", help="where reproducers go")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    rng = random.Random(args.seed)
    findings: collections.Counter = collections.Counter()
    os.environ.pop("DEBUGINFOD_URLS", None)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as work:
        t0 = time.monotonic()
        doors = Doors(Path(work))
        counts = run_doors(doors, args.inputs, args.minutes * 60, rng, out, findings)
        t1 = time.monotonic()
        core = None if args.core in (None, "none") else Path(args.core).read_bytes()
        runs = run_cli(args.cli_runs, args.minutes * 60, args.budget, doors.report, core,
                       args.core == "none", rng, out, findings) if args.cli_runs else 0
        t2 = time.monotonic()
    print(f"inputs run: {sum(counts.values())} in {t1 - t0:.0f} s ("
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")")
    print(f"command-line runs: {runs} in {t2 - t1:.0f} s")
    print(f"findings (exceptions other than the project's error classes, bad exits): "
          f"{sum(findings.values())}")
    for key, n in findings.most_common():
        print(f"  {n:6d}  {key}")
    if not any(out.iterdir()):
        out.rmdir()
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
