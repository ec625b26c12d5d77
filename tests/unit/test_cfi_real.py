"""CFI over real files on this machine, cross-checked against `readelf --debug-dump=frames-interp`."""
from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from unwinder.cfi import (
    EXPRESSION,
    OFFSET,
    REGISTER,
    SAME_VALUE,
    UNDEFINED,
    VAL_EXPRESSION,
    VAL_OFFSET,
    CfaRule,
    CfiTable,
    Rule,
)
from dict_regs import step
from unwinder.cfi.encoding import sleb
from unwinder.regs import NAMES, NUMBERS, RIP, RSP
from unwinder.space import FakeSpace, read_u64

LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")
needs_readelf = pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils readelf")
needs_libc = pytest.mark.skipif(not LIBC.exists(), reason="needs the Debian x86-64 libc")
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def sections(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """name -> (sh_addr, sh_offset, data) for the sections CFI needs."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return {s.name: (s["sh_addr"], s["sh_offset"], s.data()) for s in elf.iter_sections()
                if s.name in (".eh_frame", ".eh_frame_hdr", ".debug_frame", ".text", ".plt")}


def eh_table(path: Path, with_hdr: bool = True) -> CfiTable:
    secs = sections(path)
    eh_addr, _, eh = secs[".eh_frame"]
    hdr_addr, _, hdr = secs[".eh_frame_hdr"]
    if not with_hdr:
        return CfiTable.from_eh_frame(eh, eh_addr)
    return CfiTable.from_eh_frame(memoryview(eh), eh_addr, memoryview(hdr), hdr_addr)


def hdr_starts(path: Path) -> list[int]:
    """The initial locations in .eh_frame_hdr, read independently of the code under test."""
    hdr_addr, _, hdr = sections(path)[".eh_frame_hdr"]
    assert hdr[:4] == b"\x01\x1b\x03\x3b"
    count = struct.unpack_from("<I", hdr, 8)[0]
    return [hdr_addr + s for s, _ in struct.iter_unpack("<ii", hdr[12:12 + 8 * count])]


# --- readelf's view -------------------------------------------------------------------------

@dataclass
class Entry:
    start: int = 0
    end: int = 0
    cols: list[str] = field(default_factory=list)
    rows: dict[int, list[str]] = field(default_factory=dict)  # LOC -> values (CFA first)
    cie: Entry | None = None


_SECTION = re.compile(r"^Contents of the (\S+) section")
_CIE = re.compile(r"^([0-9a-f]{8,}) [0-9a-f]+ [0-9a-f]+ CIE")
_FDE = re.compile(r"^[0-9a-f]{8,} [0-9a-f]+ [0-9a-f]+ FDE cie=([0-9a-f]+) pc=([0-9a-f]+)\.\.([0-9a-f]+)")
_ROW = re.compile(r"^([0-9a-f]{16}) +(\S.*)$")
_REGISTER_RULE = re.compile(r"\b(r\d+) \(\w+\)")


def readelf_frames(path: Path) -> dict[str, list[Entry]]:
    # readelf exits 1 on libc without saying why (its missing debuglink?): judge by the output
    text = subprocess.run(["readelf", "--debug-dump=frames-interp", str(path)],
                          capture_output=True, text=True).stdout
    out: dict[str, list[Entry]] = {}
    fdes: list[Entry] = []
    cies: dict[int, Entry] = {}
    entry = None
    for line in text.splitlines():
        if m := _SECTION.match(line):
            fdes, cies = out.setdefault(m[1], []), {}
        elif m := _CIE.match(line):
            entry = cies[int(m[1], 16)] = Entry()
        elif m := _FDE.match(line):
            entry = Entry(int(m[2], 16), int(m[3], 16), cie=cies.get(int(m[1], 16)))
            fdes.append(entry)
        elif line.startswith("   LOC"):
            entry.cols = line.split()[1:]
        elif (m := _ROW.match(line)) and entry is not None:
            # register rules print as "r1 (rdx)"; a repeated LOC: the last row wins
            entry.rows[int(m[1], 16)] = _REGISTER_RULE.sub(r"\1", m[2]).split()
    return out


def intervals(entry: Entry):
    """(lo, hi, cols, values) for every row readelf printed; all-nop FDEs show their CIE's row."""
    source = entry if entry.rows else entry.cie
    if source is None or not source.rows:
        return
    if not entry.rows:
        yield entry.start, entry.end, source.cols, next(iter(source.rows.values()))
        return
    locs = sorted(loc for loc in entry.rows if loc < entry.end)
    for lo, hi in zip(locs, locs[1:] + [entry.end]):
        yield lo, hi, entry.cols, entry.rows[lo]


def _reg(name: str, ra_reg: int) -> int | None:
    if name == "ra":
        return ra_reg
    if name in NUMBERS:
        return NUMBERS[name]
    m = re.fullmatch(r"r(\d+)", name)
    return int(m[1]) if m else None


def check_row(row, cols: list[str], values: list[str], where: str) -> None:
    cfa = values[0]
    if cfa == "exp":
        assert row.cfa.expr is not None, where
    else:
        m = re.fullmatch(r"([a-z0-9]+)([+-]\d+)", cfa)
        assert row.cfa == CfaRule(NUMBERS[m[1]], int(m[2])), where
    ours = dict(row.rules)
    seen = set()
    for name, text in zip(cols[1:], values[1:]):
        reg = _reg(name, row.ra_reg)
        if reg is None:
            continue
        seen.add(reg)
        rule = ours.get(reg)
        if text == "u":
            assert rule is None or rule.kind == UNDEFINED, (where, name, rule)
        elif text == "s":
            assert rule == Rule(SAME_VALUE), (where, name, rule)
        elif text in ("exp", "vexp"):
            kind = EXPRESSION if text == "exp" else VAL_EXPRESSION
            assert rule is not None and rule.kind == kind, (where, name, rule)
        elif text[0] in "cv" and text[1:2] in ("+", "-"):
            assert rule == Rule(OFFSET if text[0] == "c" else VAL_OFFSET, int(text[1:])), (where, name, rule)
        else:
            assert rule == Rule(REGISTER, _reg(text, row.ra_reg)), (where, name, rule)
    assert set(ours) <= seen, (where, ours)


def cross_check(table: CfiTable, entries: list[Entry], sample: int = 200) -> int:
    """Every readelf row at its LOC, plus `sample` random pcs inside rows. Returns rows checked."""
    rng = random.Random(1234)
    spans = [(lo, hi, cols, values) for e in entries for lo, hi, cols, values in intervals(e)]
    assert spans
    picks = [(lo, *rest) for lo, _, *rest in spans]
    for lo, hi, cols, values in rng.sample(spans, min(sample, len(spans))):
        picks.append((rng.randrange(lo, hi), cols, values))
    for pc, cols, values in picks:
        row = table.row_for(pc)
        assert row is not None, hex(pc)
        check_row(row, cols, values, hex(pc))
    return len(picks)


# --- libc -------------------------------------------------------------------------------------

@needs_libc
def test_libc_every_hdr_fde_start_resolves():
    table = eh_table(LIBC)
    starts = hdr_starts(LIBC)
    assert len(table) == len(starts) > 3000
    for start in starts:
        row = table.row_for(start)
        assert row is not None and row.fde_start == start and row.fde_end > start
        assert row.ra_reg == RIP


@needs_libc
def test_libc_scan_fallback_matches_the_hdr():
    with_hdr, scanned = eh_table(LIBC), eh_table(LIBC, with_hdr=False)
    assert len(scanned) == len(with_hdr)
    for start in hdr_starts(LIBC)[::37]:
        assert scanned.row_for(start + 1) == with_hdr.row_for(start + 1)


@needs_libc
@needs_readelf
def test_libc_rows_match_readelf():
    table = eh_table(LIBC)
    entries = readelf_frames(LIBC)[".eh_frame"]
    assert len(entries) == len(table)
    assert cross_check(table, entries) > 10_000


@needs_libc
def test_libc_restore_rt_is_a_signal_frame_and_restores_everything():
    table = eh_table(LIBC)
    signal = [s for s in hdr_starts(LIBC) if table.row_for(s).signal_frame]
    assert len(signal) == 1  # __restore_rt (not exported; found by its 'S' CIE)
    row = table.row_for(signal[0] + 1)
    # glibc starts the FDE one byte early; the code is `mov $15, %rax; syscall` (rt_sigreturn)
    text_addr, text_off, text = sections(LIBC)[".text"]
    code = text[signal[0] + 1 - text_addr:][:9]
    assert code == b"\x48\xc7\xc0\x0f\x00\x00\x00\x0f\x05"
    assert row.signal_frame and row.cfa.expr == b"\x77\xa0\x01\x06"  # breg7 160; deref
    assert {reg for reg, rule in row.rules if rule.kind == EXPRESSION} == set(range(17))

    sp = 0x7FFD_0000
    frame = bytearray(0x200)
    for reg, rule in row.rules:
        assert rule.value[0] == 0x77  # breg7 <offset>: a slot in the ucontext on the stack
        struct.pack_into("<Q", frame, sleb(rule.value, 1)[0], 0xAB00 + reg)
    struct.pack_into("<Q", frame, 160, sp + 0x1000)  # the interrupted rsp
    space = FakeSpace({sp: bytes(frame)})
    cfa, caller = step(row, {RSP: sp, RIP: signal[0] + 1}, lambda a: read_u64(space, a))
    expected = {reg: 0xAB00 + reg for reg in range(17)}
    expected[RSP] = sp + 0x1000
    assert cfa == sp + 0x1000 and caller == expected and len(caller) == len(NAMES)


@needs_libc
def test_libc_plt_cfa_expression():
    table = eh_table(LIBC)
    plt_addr = sections(LIBC)[".plt"][0]
    row = table.row_for(plt_addr + 0x10)
    assert row.cfa.expr is not None
    space = FakeSpace({0x7000: struct.pack("<3Q", 0x111, 0x222, 0x333)})
    load = lambda a: read_u64(space, a)  # noqa: E731
    assert step(row, {RSP: 0x7000, RIP: plt_addr + 0x16}, load)[1][RIP] == 0x111
    assert step(row, {RSP: 0x7000, RIP: plt_addr + 0x1B}, load)[1][RIP] == 0x222


@needs_libc
def test_libc_timing(capsys):
    secs = sections(LIBC)
    eh_addr, _, eh = secs[".eh_frame"]
    hdr_addr, _, hdr = secs[".eh_frame_hdr"]
    t0 = time.perf_counter()
    table = CfiTable.from_eh_frame(eh, eh_addr, hdr, hdr_addr)
    t1 = time.perf_counter()
    scanned = CfiTable.from_eh_frame(eh, eh_addr)
    t2 = time.perf_counter()
    rng = random.Random(7)
    starts = hdr_starts(LIBC)
    pcs = [rng.randrange(starts[0], starts[-1]) for _ in range(1000)]
    t3 = time.perf_counter()
    for pc in pcs:
        table.row_for(pc)
    t4 = time.perf_counter()
    for pc in pcs:
        table.row_for(pc)
    t5 = time.perf_counter()
    with capsys.disabled():
        print(f"\nlibc CFI ({len(table)} FDEs): build with hdr {1e3 * (t1 - t0):.2f} ms, "
              f"by scan {1e3 * (t2 - t1):.1f} ms; 1000 lookups cold {1e3 * (t4 - t3):.1f} ms "
              f"({1e3 * (t4 - t3):.1f} us each), cached {1e3 * (t5 - t4):.3f} ms")
    assert len(scanned) == len(table)
    assert t1 - t0 < 0.5  # a sanity bound, not a benchmark


# --- a program built here -----------------------------------------------------------------------

PROGRAM = r"""
#include <stdio.h>
#include <string.h>
__attribute__((noinline)) long leaf(long *p, int n) {
    long s = 0; for (int i = 0; i < n; i++) s += p[i] * i; return s; }
__attribute__((noinline)) long vla(int n) {  /* a frame pointer: def_cfa_register */
    long a[n]; for (int i = 0; i < n; i++) a[i] = i * 3; return leaf(a, n); }
__attribute__((noinline)) long busy(long a, long b, long c, long d, long e, long f) {
    long x = a * b, y = c * d, z = e * f, w = vla((int)(a & 15) + 1);
    long r = leaf(&x, 1) + leaf(&y, 1) + leaf(&z, 1) + w;
    return r + x + y + z + a + b + c + d + e + f; }
int main(int argc, char **argv) {
    printf("%ld\n", busy(argc, 2, 3, 4, 5, 6) + (argc > 1 ? (long)strlen(argv[1]) : 0));
    return 0; }
"""


def build(tmp_path: Path, *flags: str) -> Path:
    src = tmp_path / "t.c"
    src.write_text(PROGRAM)
    out = tmp_path / ("t" + "".join(flags).replace("-", "_"))
    subprocess.run(["gcc", *flags, "-o", str(out), str(src)], check=True)
    return out


@needs_gcc
@needs_readelf
def test_gcc_eh_frame_matches_readelf(tmp_path):
    exe = build(tmp_path, "-O2")
    entries = readelf_frames(exe)[".eh_frame"]
    for table in (eh_table(exe), eh_table(exe, with_hdr=False)):
        cross_check(table, entries)


@needs_gcc
@needs_readelf
def test_gcc_debug_frame_matches_readelf(tmp_path):
    exe = build(tmp_path, "-O2", "-g", "-fno-asynchronous-unwind-tables")
    secs = sections(exe)
    assert ".debug_frame" in secs
    table = CfiTable.from_debug_frame(secs[".debug_frame"][2])
    entries = readelf_frames(exe)[".debug_frame"]
    assert len(table) == len(entries) >= 4
    assert cross_check(table, entries) >= 20
    frame_pointer = [r for r in (table.row_for(e.start + 0x20) for e in entries)
                     if r is not None and r.cfa.reg == NUMBERS["rbp"]]
    assert frame_pointer  # vla() switched the CFA to rbp
