"""unwinder.symbols.lines against binutils' addr2line: at every instruction of a
fixture built several ways (DWARF 4 and 5, zlib-compressed sections, no
.debug_aranges), our file:line chain (innermost first, inlined calls
included) equals `addr2line -i`'s."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from unwinder.elf import ElfFile
from unwinder.symbols.lines import DwarfLines, LineError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
pytestmark = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("addr2line")),
                                reason="needs gcc and addr2line")

VARIANTS = {
    "dwarf5-O2": ["-O2", "-gdwarf-5"],
    "dwarf4-O2": ["-O2", "-gdwarf-4"],
    "dwarf5-O0": ["-O0", "-gdwarf-5"],
    "zlib": ["-O2", "-g", "-gz=zlib"],
    "no-aranges": ["-O2", "-g"],
}


def run(*argv) -> str:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def binary(request, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param) / "lines"
    run("gcc", *VARIANTS[request.param], "-I", FIXTURES, FIXTURES / "lines.c", "-o", out)
    if request.param == "no-aranges":
        run("objcopy", "--remove-section=.debug_aranges", out)
    return request.param, out


def instructions(path: Path) -> list[int]:
    """Start addresses of the instructions of our own functions."""
    text = run("objdump", "-d", "--no-show-raw-insn", path)
    addrs, ours = [], False
    for line in text.splitlines():
        if m := re.match(r"[0-9a-f]+ <(\w+)>:", line):
            ours = m.group(1) in ("main", "outer", "leaf")
        elif ours and (m := re.match(r"\s+([0-9a-f]+):", line)):
            addrs.append(int(m.group(1), 16))
    return addrs


def addr2line(path: Path, addrs: list[int]) -> list[list[tuple]]:
    """Per address, addr2line -i's (file, line) chain, innermost first
    (empty where it knows no line)."""
    chains = []
    for line in run("addr2line", "-a", "-i", "-e", path, *map(hex, addrs)).splitlines():
        if line.startswith("0x"):
            chains.append([])
        elif not line.startswith("??:"):
            file, _, rest = line.rpartition(":")
            chains[-1].append((file, int(rest.split()[0])))
    return chains


def test_every_instruction_matches_addr2line(binary):
    variant, binary = binary
    elf = ElfFile(binary.read_bytes(), str(binary))
    if variant == "no-aranges":
        assert ".debug_aranges" not in elf.sections
    if variant == "zlib":
        assert elf.sections[".debug_info"].flags & 0x800  # SHF_COMPRESSED
    lines = DwarfLines(elf)
    addrs = instructions(binary)
    assert len(addrs) > 20
    want = addr2line(binary, addrs)
    assert len(want) == len(addrs)
    inlined_seen = 0
    for addr, theirs in zip(addrs, want):
        ours = [(loc.file, loc.line) for loc in lines.locate(addr)]
        assert ours == theirs, f"{addr:#x}: ours {ours} addr2line {theirs}"
        inlined_seen += len(ours) > 1
    if "-O2" in VARIANTS[variant]:
        assert inlined_seen, "the fixture should have inlined code"


def test_names_of_the_inline_chain(tmp_path):
    out = tmp_path / "lines"
    run("gcc", "-O2", "-g", "-I", FIXTURES, FIXTURES / "lines.c", "-o", out)
    lines = DwarfLines(ElfFile(out.read_bytes(), str(out)))
    chains = {tuple(loc.function for loc in lines.locate(a)) for a in instructions(out)}
    # scale() is inlined into middle(), itself inlined into outer()
    assert ("scale", "middle", "outer") in chains, chains
    assert ("leaf",) in chains, chains


def test_outside_every_unit_is_empty(tmp_path):
    out = tmp_path / "lines"
    run("gcc", "-O2", "-g", "-I", FIXTURES, FIXTURES / "lines.c", "-o", out)
    lines = DwarfLines(ElfFile(out.read_bytes(), str(out)))
    assert lines.locate(0) == []
    assert lines.locate(2**64 - 1) == []


def test_corrupt_debug_info_raises_line_error_only(tmp_path):
    out = tmp_path / "lines"
    run("gcc", "-O2", "-g", "-I", FIXTURES, FIXTURES / "lines.c", "-o", out)
    data = bytearray(out.read_bytes())
    good = ElfFile(bytes(data))
    info = good.sections[".debug_info"]
    addrs = instructions(out)
    for step in (7, 13, 29):
        bad = bytearray(data)
        for i in range(info.offset + 11, info.offset + info.size, step):
            bad[i] ^= 0x5A
        lines = DwarfLines(ElfFile(bytes(bad)))
        for a in addrs[::5]:
            try:
                lines.locate(a)
            except LineError:
                pass


def test_line_program_rows_equal_pyelftools(binary):
    """Our line-program loop yields the rows pyelftools' decoder does, for
    every unit (the fixture's and the C runtime's)."""
    from unwinder.symbols import line_program
    from unwinder.symbols.lines import _dwarf_info
    _, path = binary
    dwarf = _dwarf_info(ElfFile(path.read_bytes(), str(path)))
    units = 0
    for cu in dwarf.iter_CUs():
        program = dwarf.line_program_for_CU(cu)
        if program is None:
            continue
        theirs = [(e.state.address, None if e.state.end_sequence else
                   (e.state.file, e.state.line, e.state.column))
                  for e in program.get_entries() if e.state is not None]
        ours = line_program.decode(program.stream.getvalue(), program.program_start_offset,
                                   program.program_end_offset, program.header)
        assert ours == theirs, cu.cu_offset
        units += 1
    assert units
