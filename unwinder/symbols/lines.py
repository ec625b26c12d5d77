"""pc -> file:line:column and the chain of inlined calls at it, from DWARF
(.debug_line, .debug_info; DWARF 4 and 5).

pyelftools parses DIEs and line programs; it is handed every DWARF section
it may dereference, decompressed by our ELF reader (.debug_loc and
.debug_loclists, often the biggest, only when a DW_FORM_loclistx, as clang
writes, makes it look). An address goes to its one compile unit through
.debug_aranges, which we read ourselves (pyelftools decodes it entry by
entry, ~100x slower), else through the units' own ranges.

pyelftools has no error contract on bad input (AssertionError,
RecursionError, ZeroDivisionError, ... besides its own): `locate` is the one
boundary where whatever it raises becomes LineError.
"""
from __future__ import annotations

import bisect
import io
import struct
from dataclasses import dataclass

from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DwarfConfig, DWARFInfo
from elftools.dwarf.ranges import BaseAddressEntry

from . import line_program
from .dwarf_scan import CONTAINERS, Scanner, UnitScan, Unsupported
from ..elf import SHT_NOBITS, ElfError, ElfFile

_SECTIONS = ("info", "abbrev", "str", "line", "line_str", "ranges", "rnglists",
             "addr", "str_offsets", "types", "sup")
_ON_DEMAND = ("loc", "loclists")
_SCOPES = {"DW_TAG_subprogram", "DW_TAG_inlined_subroutine", "DW_TAG_lexical_block"}
MAX_DEPTH = 64   # nesting of scopes followed at one address
MAX_NAME_HOPS = 8  # abstract_origin / specification links followed for a name


class LineError(ValueError):
    """Malformed DWARF at an address (pyelftools' many exceptions, as one)."""


@dataclass(frozen=True, slots=True)
class Location:
    """One (possibly inlined) function at an address and where in it."""
    function: str | None      # DW_AT_name in its namespaces and classes; None: no function
    linkage_name: str | None  # DW_AT_linkage_name, as in the symbol table
    file: str | None
    line: int | None
    column: int | None


class DwarfLines:
    """Line and inline lookups in one ELF file with .debug_info, cached per
    compile unit: a unit's line table and DIE tree are decoded on first use."""

    def __init__(self, elf: ElfFile):
        """Raises ElfError only: pyelftools decodes nothing before `locate`."""
        self._dwarf = _dwarf_info(elf)
        if self._dwarf.debug_info_sec is None:
            raise ElfError(f"{elf.name}: .debug_info has no contents")
        self._info = self._dwarf.debug_info_sec.stream.getvalue()
        self._aranges = _aranges(elf)
        self._unit_ranges: list[tuple[int, int, int]] | None = None
        self._rows: dict[int, tuple[list[int], list[tuple]]] = {}
        self._functions: dict[int, tuple[list[int], list[tuple]]] = {}
        self._scanners: dict[int, Scanner] = {}
        self._scans: dict[int, UnitScan | None] = {}
        self._found: dict[int, list[Location]] = {}

    def locate(self, addr: int) -> list[Location]:
        """Innermost first: the inlined functions at a link-time address,
        then the enclosing function at the call site of the outermost
        inlined one (function=None when DWARF has no function there).
        Empty when no unit covers the address."""
        found = self._found.get(addr)
        if found is None:
            self._found[addr] = []  # a failure is said once per address
            try:
                found = self._found[addr] = self._locate(addr)
            except Exception as e:  # the boundary: see the module's docstring
                raise LineError(f"DWARF at {addr:#x}: {type(e).__name__}: {e}") from None
        return found

    def _locate(self, addr: int) -> list[Location]:
        cu = self._unit_at(addr)
        if cu is None:
            return []
        file, line, column = self._line_at(cu, addr)
        chain = self._scopes_at(cu, addr)
        out = []
        for die in reversed(chain):
            if die.tag == "DW_TAG_inlined_subroutine":
                name, linkage = self._names(die)
                out.append(Location(name, linkage, file, line, column))
                file = _file_name(cu, self._line_program(cu), _attr(die, "DW_AT_call_file"))
                line = _attr(die, "DW_AT_call_line") or None  # 0: unknown
                column = _attr(die, "DW_AT_call_column") or None
            elif die.tag == "DW_TAG_subprogram":
                name, linkage = self._names(die)
                out.append(Location(name, linkage, file, line, column))
                return out
        out.append(Location(None, None, file, line, column))
        return out

    def _unit_at(self, addr: int):
        if self._aranges:
            starts, rows = self._aranges
            i = bisect.bisect_right(starts, addr) - 1
            if i >= 0 and addr < rows[i][1]:
                return self._dwarf.get_CU_at(rows[i][2])
        if self._unit_ranges is None:
            self._unit_ranges = sorted(
                (lo, hi, cu.cu_offset) for cu in self._dwarf.iter_CUs()
                for lo, hi in _ranges(cu.get_top_DIE()))
        for lo, hi, offset in self._unit_ranges:
            if lo <= addr < hi:
                return self._dwarf.get_CU_at(offset)
        return None

    def _scopes_at(self, cu, addr: int) -> list:
        """The function holding addr and the scopes in it, outermost first.
        A unit's functions are indexed by address once; only the one that
        holds addr is decoded."""
        index = self._functions.get(cu.cu_offset)
        if index is None:
            scan = self._scan(cu)
            if scan is None:
                found = [(die.offset, None, None) for die in _functions(cu.get_top_DIE())]
            else:
                found = scan.functions
            rows = []
            for offset, low, high in found:
                pairs = [(low, high)] if low is not None else \
                    _ranges(cu.get_DIE_from_refaddr(offset))
                rows += [(lo, hi, offset) for lo, hi in pairs if lo < hi]
            rows.sort()
            index = self._functions[cu.cu_offset] = ([r[0] for r in rows], rows)
        starts, rows = index
        i = bisect.bisect_right(starts, addr) - 1
        # ranges of distinct functions do not overlap; a few back for safety
        for lo, hi, offset in reversed(rows[max(0, i - 8):i + 1]):
            if lo <= addr < hi:
                return [cu.get_DIE_from_refaddr(offset)] + self._scopes_in(cu, offset, addr)
        return []

    def _scopes_in(self, cu, offset: int, addr: int) -> list:
        """The nested DIEs (inlined calls, blocks) under the function at
        `offset` that hold addr, outermost first; only those are decoded."""
        out = []
        try:
            for _ in range(MAX_DEPTH):
                for child, low, high in self._scanner(cu).children(offset, _SCOPES):
                    if low is not None and low <= addr < high or low is None and any(
                            lo <= addr < hi for lo, hi in _ranges(cu.get_DIE_from_refaddr(child))):
                        out.append(cu.get_DIE_from_refaddr(child))
                        offset = child
                        break
                else:
                    return out
        except Unsupported:
            die = out[-1] if out else cu.get_DIE_from_refaddr(offset)
            return out + _scopes_at(die, addr)
        return out

    def _scanner(self, cu) -> Scanner:
        if cu.cu_offset not in self._scanners:
            self._scanners[cu.cu_offset] = Scanner(self._info, cu)
        return self._scanners[cu.cu_offset]

    def _scan(self, cu) -> UnitScan | None:
        """The unit's functions and scopes (None where dwarf_scan cannot size
        its DIEs: then pyelftools walks them)."""
        if cu.cu_offset not in self._scans:
            try:
                self._scans[cu.cu_offset] = self._scanner(cu).unit()
            except Unsupported:
                self._scans[cu.cu_offset] = None
        return self._scans[cu.cu_offset]

    def _names(self, die) -> tuple[str | None, str | None]:
        """(qualified name, DW_AT_linkage_name), following abstract_origin
        and specification links to the declaration that carries them; the
        name is qualified by the namespaces and classes that declaration is
        in, as gdb names a function that has no linkage name."""
        name = linkage = None
        for _ in range(MAX_NAME_HOPS):
            attrs = die.attributes
            linkage = linkage or _text_or_none(_attr(die, "DW_AT_linkage_name")
                                               or _attr(die, "DW_AT_MIPS_linkage_name"))
            if name is None and "DW_AT_name" in attrs:
                name = self._qualified(die, _text(attrs["DW_AT_name"].value))
            link = next((a for a in ("DW_AT_abstract_origin", "DW_AT_specification")
                         if a in attrs), None)
            if (name and linkage) or link is None:
                break
            die = die.get_DIE_from_attribute(link)
        return name, linkage

    def _qualified(self, die, name: str) -> str:
        """`name` after the names of the scopes holding `die`, outermost
        first: an anonymous namespace is `(anonymous namespace)`; an unnamed
        class (a g++ lambda's) ends the chain, as in gdb."""
        cu = die.cu
        scan = self._scan(cu)

        def parent(d):
            if scan is None:
                return d.get_parent()
            at = scan.parents.get(d.offset)
            return None if at is None else cu.get_DIE_from_refaddr(at)

        parts = [name]
        scope = parent(die)
        for _ in range(MAX_DEPTH):
            if scope is None or scope.tag not in CONTAINERS:
                break
            scope_name = _attr(scope, "DW_AT_name")
            if scope_name is None and scope.tag != "DW_TAG_namespace":
                break
            parts.append("(anonymous namespace)" if scope_name is None else _text(scope_name))
            scope = parent(scope)
        return "::".join(reversed(parts))

    def _line_program(self, cu):
        return self._dwarf.line_program_for_CU(cu)

    def _line_at(self, cu, addr: int) -> tuple[str | None, int | None, int | None]:
        table = self._rows.get(cu.cu_offset)
        if table is None:
            table = self._rows[cu.cu_offset] = _line_rows(self._line_program(cu))
        addrs, rows = table
        i = bisect.bisect_right(addrs, addr) - 1
        if i < 0 or rows[i] is None:
            return None, None, None
        file, line, column = rows[i]
        return _file_name(cu, self._line_program(cu), file), line or None, column or None


def _dwarf_info(elf: ElfFile) -> DWARFInfo:
    sections = {}
    for short in _SECTIONS + _ON_DEMAND:
        name = f".debug_{short}"
        section = elf.sections.get(name)
        if section is None or section.type == SHT_NOBITS:
            sections[f"debug_{short}_sec"] = None
            continue
        if short in _ON_DEMAND:
            stream, size = _OnDemand(elf, section), elf.content_size(section)
        else:
            data = bytes(elf.contents(section))
            stream, size = io.BytesIO(data), len(data)
        sections[f"debug_{short}_sec"] = DebugSectionDescriptor(stream, name, None, size, 0)
    # looked up by our own code (aranges) or never needed for lines (CFI, pubnames)
    none = dict.fromkeys(("debug_aranges_sec", "debug_frame_sec", "eh_frame_sec",
                          "debug_pubtypes_sec", "debug_pubnames_sec", "gnu_debugaltlink_sec"))
    return DWARFInfo(DwarfConfig(little_endian=True, machine_arch="x64", default_address_size=8),
                     **sections, **none)


class _OnDemand:
    """A section's stream, read (and decompressed) on first use."""

    def __init__(self, elf: ElfFile, section):
        self._load = lambda: io.BytesIO(bytes(elf.contents(section)))
        self._stream = None

    def __getattr__(self, name):
        if self._stream is None:
            self._stream = self._load()
        return getattr(self._stream, name)


def _aranges(elf: ElfFile) -> tuple[list[int], list[tuple[int, int, int]]] | None:
    """.debug_aranges as sorted (start, end, unit offset) rows, or None."""
    try:
        data = elf.section_data(".debug_aranges")
    except ElfError:
        return None
    if data is None:
        return None
    data = bytes(data)
    rows = []
    pos = 0
    while pos + 16 <= len(data):
        length, version, unit, addr_size, seg_size = struct.unpack_from("<IHIBB", data, pos)
        end = pos + 4 + length
        if length >= 0xfffffff0 or end > len(data) or addr_size != 8 or seg_size:
            return None  # 64-bit DWARF or an odd layout: fall back to unit ranges
        at = pos + 12
        at += -at % 16  # tuples are aligned to twice the address size
        while at + 16 <= end:
            start, size = struct.unpack_from("<QQ", data, at)
            at += 16
            if start == 0 and size == 0:
                break
            if size:
                rows.append((start, start + size, unit))
        pos = end
    rows.sort()
    return [r[0] for r in rows], rows


def _line_rows(program) -> tuple[list[int], list]:
    """Sorted row addresses and (file, line, column) per row; None marks the
    end of a sequence (addresses past it belong to no row)."""
    seq = [] if program is None else line_program.decode(
        program.stream.getvalue(), program.program_start_offset,
        program.program_end_offset, program.header)
    seq.sort(key=lambda r: (r[0], r[1] is not None))  # a sequence end yields to a start there
    # among rows at one address the last one wins, as in addr2line
    addrs, rows = [], []
    for address, row in seq:
        if addrs and addrs[-1] == address:
            rows[-1] = row if row is not None or rows[-1] is None else rows[-1]
        else:
            addrs.append(address)
            rows.append(row)
    return addrs, rows


def _file_name(cu, program, index) -> str | None:
    if program is None or index is None:
        return None
    header = program.header
    version = header["version"]
    files = header["file_entry"]
    i = index if version >= 5 else index - 1
    if not 0 <= i < len(files):
        return None
    entry = files[i]
    name = _text(entry.name)
    if name.startswith("/"):
        return name
    dirs = header["include_directory"]
    d = entry.dir_index if version >= 5 else entry.dir_index - 1
    if 0 <= d < len(dirs):
        directory = _text(dirs[d])
    else:  # DWARF 4's directory 0 is the unit's DW_AT_comp_dir
        directory = _comp_dir(cu) if d == -1 else ""
    if directory and not directory.startswith("/"):
        # relative to the compilation directory (DWARF 5: directory 0), as clang
        # writes; a relative one (glibc's "./posix") is left out, as elfutils does
        base = _text(dirs[0]) if version >= 5 and d != 0 else _comp_dir(cu)
        if base.startswith("/"):
            directory = _join(base, directory)
    return _join(directory, name)


def _comp_dir(cu) -> str:
    return _text(_attr(cu.get_top_DIE(), "DW_AT_comp_dir") or "")


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}" if directory and name else directory or name


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _attr(die, name):
    attr = die.attributes.get(name)
    return attr.value if attr is not None else None


def _ranges(die) -> list[tuple[int, int]]:
    attrs = die.attributes
    low = attrs.get("DW_AT_low_pc")
    if "DW_AT_ranges" in attrs:
        lists = die.dwarfinfo.range_lists()
        if lists is None:
            return []
        entries = lists.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=die.cu)
        top = die.cu.get_top_DIE()
        base = _attr(top, "DW_AT_low_pc") or 0
        out = []
        for e in entries:
            if isinstance(e, BaseAddressEntry):
                base = e.base_address
            elif e.is_absolute:
                out.append((e.begin_offset, e.end_offset))
            else:
                out.append((base + e.begin_offset, base + e.end_offset))
        return out
    if low is None or "DW_AT_high_pc" not in attrs:
        return []
    high = attrs["DW_AT_high_pc"]
    # an address form is the end itself; a constant is the length (DWARF 4+)
    end = high.value if high.form.startswith("DW_FORM_addr") else low.value + high.value
    return [(low.value, end)]


def _functions(die, depth: int = 0):
    """The subprograms under a unit's top DIE, namespaces and classes
    included, decoded one by one (for DWARF dwarf_scan cannot size)."""
    for child in die.iter_children():
        if child.tag == "DW_TAG_subprogram":
            yield child
        elif child.tag in CONTAINERS and depth < MAX_DEPTH:
            yield from _functions(child, depth + 1)


def _scopes_at(die, addr: int, depth: int = 0) -> list:
    """The nested DIEs (inlined calls, blocks) under a function that hold
    addr, outermost first."""
    if depth >= MAX_DEPTH:
        return []
    for child in die.iter_children():
        if child.tag in _SCOPES and any(lo <= addr < hi for lo, hi in _ranges(child)):
            return [child] + _scopes_at(child, addr, depth + 1)
    return []


def _text_or_none(value) -> str | None:
    return None if value is None else _text(value)
