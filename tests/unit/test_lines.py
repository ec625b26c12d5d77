"""unwinder.symbols.lines against binutils' addr2line: at every instruction of a
fixture built several ways (DWARF 4 and 5 by gcc and by clang, zlib-compressed
sections, no .debug_aranges), our file:line chain (innermost first, inlined
calls included) equals `addr2line -i`'s; damaged DWARF raises LineError only."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from unwinder.elf import ElfError, ElfFile
from unwinder.symbols.lines import DwarfLines, LineError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
pytestmark = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("addr2line")),
                                reason="needs gcc and addr2line")

VARIANTS = {
    "dwarf5-O2": ["gcc", "-O2", "-gdwarf-5"],
    "dwarf4-O2": ["gcc", "-O2", "-gdwarf-4"],
    "dwarf5-O0": ["gcc", "-O0", "-gdwarf-5"],
    "zlib": ["gcc", "-O2", "-g", "-gz=zlib"],
    "no-aranges": ["gcc", "-O2", "-g"],
    # clang 14 writes DWARF 5 with DW_FORM_loclistx, rnglistx, strx and addrx
    "clang-O2": ["clang", "-O2", "-g"],
    "clang-O0": ["clang", "-O0", "-g"],
    "clang-dwarf4": ["clang", "-O2", "-gdwarf-4"],
}


def run(*argv) -> str:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def binary(request, tmp_path_factory) -> tuple[str, Path]:
    cc, *flags = VARIANTS[request.param]
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed (scripts/venv test installs it)")
    out = tmp_path_factory.mktemp(request.param) / "lines"
    run(cc, *flags, "-I", FIXTURES, FIXTURES / "lines.c", "-o", out)
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
    (empty where it knows no line; line None where it says `?`: a line 0 row)."""
    chains = []
    for line in run("addr2line", "-a", "-i", "-e", path, *map(hex, addrs)).splitlines():
        if line.startswith("0x"):
            chains.append([])
        elif not line.startswith("??:"):
            file, _, rest = line.rpartition(":")
            number = rest.split()[0]
            chains[-1].append((file, None if number == "?" else int(number)))
    return chains


def test_every_instruction_matches_addr2line(binary):
    variant, binary = binary
    elf = ElfFile(binary.read_bytes(), str(binary))
    if variant == "clang-O2":
        assert ".debug_loclists" in elf.sections and ".debug_addr" in elf.sections
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
    if "-O2" in VARIANTS[variant] and variant != "clang-dwarf4":
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


def test_a_compressed_section_that_does_not_inflate_is_one_error(tmp_path):
    """Inflated on demand, a broken zlib stream is still said once for the
    file (as when it was inflated whole), not once per address."""
    out = tmp_path / "lines"
    run("gcc", "-O2", "-g", "-gz=zlib", "-I", FIXTURES, FIXTURES / "lines.c", "-o", out)
    data = bytearray(out.read_bytes())
    info = ElfFile(bytes(data)).sections[".debug_info"]
    assert info.flags & 0x800  # SHF_COMPRESSED
    for i in range(info.offset + 40, info.offset + info.size, 17):
        data[i] ^= 0x55
    lines = DwarfLines(ElfFile(bytes(data), str(out)))
    said = set()
    for a in instructions(out):
        try:
            assert lines.locate(a) == []
        except LineError as e:
            said.add(str(e))
    assert len(said) == 1 and said.pop().startswith(f"DWARF: {out}: .debug_info: Error -3")


# ------------------------------------------------ damaged DWARF, property tests

DEBUG_SECTIONS = (".debug_info", ".debug_abbrev", ".debug_line", ".debug_str", ".debug_addr",
                  ".debug_str_offsets", ".debug_line_str", ".debug_rnglists", ".debug_loclists",
                  ".debug_aranges", ".debug_ranges")
_SHDR = struct.Struct("<IIQQQQIIQQ")


@pytest.fixture(scope="module", params=["gcc", "clang"])
def pristine(request, tmp_path_factory) -> tuple[bytes, list[int]]:
    if shutil.which(request.param) is None:
        pytest.skip(f"{request.param} is not installed")
    out = tmp_path_factory.mktemp(f"pristine-{request.param}") / "lines"
    run(request.param, "-O2", "-g", "-I", FIXTURES, FIXTURES / "lines.c", "-o", out)
    return out.read_bytes(), instructions(out)[::7]


def section_header_at(data: bytes, name: str) -> int | None:
    """File offset of section `name`'s header."""
    shoff, = struct.unpack_from("<Q", data, 40)
    shnum, shstrndx = struct.unpack_from("<HH", data, 60)
    strtab = _SHDR.unpack_from(data, shoff + shstrndx * _SHDR.size)
    for i in range(shnum):
        at = shoff + i * _SHDR.size
        name_off = _SHDR.unpack_from(data, at)[0]
        end = data.index(b"\0", strtab[4] + name_off)
        if data[strtab[4] + name_off:end].decode() == name:
            return at
    return None


def only_line_errors(data: bytes, addrs: list[int]) -> None:
    """Every lookup gives locations or LineError; building gives ElfError at most."""
    try:
        lines = DwarfLines(ElfFile(data, "damaged"))
    except ElfError:
        return
    for a in addrs:
        try:
            lines.locate(a)
        except LineError:
            pass


def test_debug_info_at_offset_zero(pristine):
    """The section header says .debug_info starts at the file's first byte."""
    data, addrs = pristine
    bad = bytearray(data)
    at = section_header_at(data, ".debug_info")
    struct.pack_into("<Q", bad, at + 24, 0)
    lines = DwarfLines(ElfFile(bytes(bad), "damaged"))
    with pytest.raises(LineError):
        for a in addrs:
            lines.locate(a)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(DEBUG_SECTIONS), st.sampled_from((24, 32)),
       st.one_of(st.integers(0, 2**16), st.integers(0, 2**64 - 1)))
def test_section_header_offset_or_size_replaced(pristine, name, field, value):
    data, addrs = pristine
    at = section_header_at(data, name)
    if at is None:
        return
    bad = bytearray(data)
    struct.pack_into("<Q", bad, at + field, value)
    only_line_errors(bytes(bad), addrs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(DEBUG_SECTIONS),
       st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                min_size=1, max_size=24))
def test_bytes_of_a_debug_section_replaced(pristine, name, flips):
    data, addrs = pristine
    at = section_header_at(data, name)
    if at is None:
        return
    offset, size = struct.unpack_from("<QQ", data, at + 24)
    bad = bytearray(data)
    for where, value in flips:
        bad[offset + int(where * size)] = value
    only_line_errors(bytes(bad), addrs)


def test_line_program_rows_equal_pyelftools(binary):
    """Our unit and line program headers and our line-program loop give the
    file tables and rows pyelftools' decoder does, for every unit (the
    fixture's and the C runtime's)."""
    from elftools.elf.elffile import ELFFile

    from unwinder.symbols import line_program
    from unwinder.symbols.dwarf import Dwarf
    _, path = binary
    ours_dwarf = Dwarf(ElfFile(path.read_bytes(), str(path)))
    with open(path, "rb") as f:
        dwarf = ELFFile(f).get_dwarf_info()
        units = 0
        for cu in dwarf.iter_CUs():
            program = dwarf.line_program_for_CU(cu)
            if program is None:
                continue
            theirs = [(e.state.address, None if e.state.end_sequence else
                       (e.state.file, e.state.line, e.state.column))
                      for e in program.get_entries() if e.state is not None]
            header = ours_dwarf.line_header(ours_dwarf.unit(cu.cu_offset))
            ours = line_program.decode(header.data, header.start, header.end, header)
            assert ours == theirs, cu.cu_offset
            text = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
            assert header.files == [(text(e.name), e.dir_index)
                                    for e in program.header["file_entry"]]
            assert header.dirs == [text(d) for d in program.header["include_directory"]]
            units += 1
    assert units
