"""pc -> file:line:column and the chain of inlined calls at it, from DWARF
(.debug_line, .debug_info; DWARF 4 and 5).

An address goes to its one compile unit through .debug_aranges (else the
units' own ranges); only that unit is read: its line program (decoded by
line_program), its functions found by skipping over DIEs (dwarf_scan), and
the DIEs of the scopes that hold the address (dwarf). Compressed sections
are inflated only as far as those units reach.

Malformed DWARF raises whatever the reading hits (IndexError, ValueError,
RecursionError, ...): `locate` is the one boundary where it becomes LineError.
"""
from __future__ import annotations

import bisect
import struct

from . import line_program
from .dwarf import Die, Dwarf, LineHeader, Unit
from .dwarf_scan import CONTAINERS, Scanner, UnitScan
from ..elf import ElfError, ElfFile
from ..record import Record

_SCOPES = {"DW_TAG_subprogram", "DW_TAG_inlined_subroutine", "DW_TAG_lexical_block"}
MAX_DEPTH = 64   # nesting of scopes followed at one address
MAX_NAME_HOPS = 8  # abstract_origin / specification links followed for a name


class LineError(ValueError):
    """Malformed DWARF at an address (whatever reading it raised, as one)."""


class Location(Record):
    """One (possibly inlined) function at an address and where in it:
    function (DW_AT_name in its namespaces and classes; None: no function),
    linkage_name (DW_AT_linkage_name, as in the symbol table), file, line,
    column."""
    __slots__ = ()
    _fields = ("function", "linkage_name", "file", "line", "column")

    def __new__(cls, function: str | None, linkage_name: str | None, file: str | None,
                line: int | None, column: int | None):
        return tuple.__new__(cls, (function, linkage_name, file, line, column))


SECTIONS = (".debug_abbrev", ".debug_addr", ".debug_line", ".debug_line_str", ".debug_ranges",
            ".debug_rnglists", ".debug_str", ".debug_str_offsets")


class DwarfLines:
    """Line and inline lookups in one ELF file with .debug_info, cached per
    compile unit: a unit's line table and DIE tree are decoded on first use."""

    def __init__(self, elf: ElfFile):
        """Raises ElfError only: nothing is decoded before `locate`."""
        self.elf = elf
        self._dwarf = Dwarf(elf)
        self._aranges: tuple | None | bool = False
        self._unit_ranges: list[tuple[int, int, int]] | None = None
        self._rows: dict[int, tuple[list[int], list[tuple]]] = {}
        self._headers: dict[int, LineHeader | None] = {}
        self._functions: dict[int, tuple[list[int], list[tuple]]] = {}
        self._scanners: dict[int, Scanner] = {}
        self._scans: dict[int, UnitScan] = {}
        self._found: dict[int, list[Location]] = {}

    def inflate(self) -> None:
        """Every DWARF section read (inflated) now: a process that forks
        its workers (the service) does it once, and they share the pages."""
        self._dwarf.info.all()
        for name in SECTIONS:
            self._dwarf.section(name).all()
        if self._aranges is False:  # and the address -> unit index
            self._aranges = _aranges(self.elf)

    @property
    def fresh(self) -> bool:
        """Nothing looked up yet: no unit of this file is in memory."""
        return not self._found

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
            except ElfError as e:  # a section that does not inflate: said once for the file
                raise LineError(f"DWARF: {e}") from None
            except Exception as e:  # the boundary: see the module's docstring
                raise LineError(f"DWARF at {addr:#x}: {type(e).__name__}: {e}") from None
        return found

    def _locate(self, addr: int) -> list[Location]:
        unit = self._unit_at(addr)
        if unit is None:
            return []
        file, line, column = self._line_at(unit, addr)
        chain = self._scopes_at(unit, addr)
        out = []
        for die in reversed(chain):
            if die.tag == "DW_TAG_inlined_subroutine":
                name, linkage = self._names(die)
                out.append(Location(name, linkage, file, line, column))
                file = _file_name(unit, self._line_header(unit), die.value("DW_AT_call_file"))
                line = die.value("DW_AT_call_line") or None  # 0: unknown
                column = die.value("DW_AT_call_column") or None
            elif die.tag == "DW_TAG_subprogram":
                name, linkage = self._names(die)
                out.append(Location(name, linkage, file, line, column))
                return out
        out.append(Location(None, None, file, line, column))
        return out

    def _unit_at(self, addr: int) -> Unit | None:
        if self._aranges is False:
            self._aranges = _aranges(self.elf)
        if self._aranges:
            starts, rows = self._aranges
            i = bisect.bisect_right(starts, addr) - 1
            if i >= 0 and addr < rows[i][1]:
                return self._dwarf.unit(rows[i][2])
        if self._unit_ranges is None:
            self._unit_ranges = sorted(
                (lo, hi, unit.offset) for unit in self._dwarf.units()
                for lo, hi in self._dwarf.ranges(unit.top))
        for lo, hi, offset in self._unit_ranges:
            if lo <= addr < hi:
                return self._dwarf.unit(offset)
        return None

    def _die(self, unit: Unit, offset: int) -> Die:
        return self._dwarf.die(unit, offset)

    def _scopes_at(self, unit: Unit, addr: int) -> list[Die]:
        """The function holding addr and the scopes in it, outermost first.
        A unit's functions are indexed by address once; only the one that
        holds addr is decoded."""
        index = self._functions.get(unit.offset)
        if index is None:
            rows = []
            for offset, low, high in self._scan(unit).functions:
                pairs = [(low, high)] if low is not None else \
                    self._dwarf.ranges(self._die(unit, offset))
                rows += [(lo, hi, offset) for lo, hi in pairs if lo < hi]
            rows.sort()
            index = self._functions[unit.offset] = ([r[0] for r in rows], rows)
        starts, rows = index
        i = bisect.bisect_right(starts, addr) - 1
        # ranges of distinct functions do not overlap; a few back for safety
        for lo, hi, offset in reversed(rows[max(0, i - 8):i + 1]):
            if lo <= addr < hi:
                return [self._die(unit, offset)] + self._scopes_in(unit, offset, addr)
        return []

    def _scopes_in(self, unit: Unit, offset: int, addr: int) -> list[Die]:
        """The nested DIEs (inlined calls, blocks) under the function at
        `offset` that hold addr, outermost first; only those are decoded."""
        out = []
        for _ in range(MAX_DEPTH):
            for child, low, high in self._scanner(unit).children(offset, _SCOPES):
                if low is not None and low <= addr < high or low is None and any(
                        lo <= addr < hi for lo, hi in self._dwarf.ranges(self._die(unit, child))):
                    out.append(self._die(unit, child))
                    offset = child
                    break
            else:
                return out
        return out

    def _scanner(self, unit: Unit) -> Scanner:
        if unit.offset not in self._scanners:
            self._scanners[unit.offset] = Scanner(self._dwarf.info.data, unit)
        return self._scanners[unit.offset]

    def _scan(self, unit: Unit) -> UnitScan:
        """The unit's functions and scopes."""
        if unit.offset not in self._scans:
            self._scans[unit.offset] = self._scanner(unit).unit()
        return self._scans[unit.offset]

    def _names(self, die: Die) -> tuple[str | None, str | None]:
        """(qualified name, DW_AT_linkage_name), following abstract_origin
        and specification links to the declaration that carries them; the
        name is qualified by the namespaces and classes that declaration is
        in, as gdb names a function that has no linkage name."""
        name = linkage = None
        for _ in range(MAX_NAME_HOPS):
            attrs = die.attrs
            linkage = linkage or _text_or_none(die.value("DW_AT_linkage_name")
                                               or die.value("DW_AT_MIPS_linkage_name"))
            if name is None and "DW_AT_name" in attrs:
                name = self._qualified(die, _text(die.value("DW_AT_name")))
            link = next((a for a in ("DW_AT_abstract_origin", "DW_AT_specification")
                         if a in attrs), None)
            if (name and linkage) or link is None:
                break
            target = die.ref(link)
            if target is None:
                break
            die = self._die(self._dwarf.unit_holding(target, die.unit), target)
        return name, linkage

    def _qualified(self, die: Die, name: str) -> str:
        """`name` after the names of the scopes holding `die`, outermost
        first: an anonymous namespace is `(anonymous namespace)`; an unnamed
        class (a g++ lambda's) ends the chain, as in gdb."""
        unit = die.unit
        parents = self._scan(unit).parents
        parts = [name]
        at = parents.get(die.offset)
        for _ in range(MAX_DEPTH):
            scope = None if at is None else self._die(unit, at)
            if scope is None or scope.tag not in CONTAINERS:
                break
            scope_name = scope.value("DW_AT_name")
            if scope_name is None and scope.tag != "DW_TAG_namespace":
                break
            parts.append("(anonymous namespace)" if scope_name is None else _text(scope_name))
            at = parents.get(scope.offset)
        return "::".join(reversed(parts))

    def _line_header(self, unit: Unit) -> LineHeader | None:
        if unit.offset not in self._headers:
            self._headers[unit.offset] = self._dwarf.line_header(unit)
        return self._headers[unit.offset]

    def _line_at(self, unit: Unit, addr: int) -> tuple[str | None, int | None, int | None]:
        table = self._rows.get(unit.offset)
        if table is None:
            table = self._rows[unit.offset] = _line_rows(self._line_header(unit))
        addrs, rows = table
        i = bisect.bisect_right(addrs, addr) - 1
        if i < 0 or rows[i] is None:
            return None, None, None
        file, line, column = rows[i]
        return _file_name(unit, self._line_header(unit), file), line or None, column or None


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


def _line_rows(header: LineHeader | None) -> tuple[list[int], list]:
    """Sorted row addresses and (file, line, column) per row; None marks the
    end of a sequence (addresses past it belong to no row)."""
    seq = [] if header is None else line_program.decode(
        header.data, header.start, header.end, header)
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


def _file_name(unit: Unit, header: LineHeader | None, index) -> str | None:
    if header is None or not isinstance(index, int):
        return None
    version = header.version
    files = header.files
    i = index if version >= 5 else index - 1
    if not 0 <= i < len(files):
        return None
    name, dir_index = files[i]
    if name.startswith("/"):
        return name
    dirs = header.dirs
    d = dir_index if version >= 5 else dir_index - 1
    if 0 <= d < len(dirs):
        directory = dirs[d]
    else:  # DWARF 4's directory 0 is the unit's DW_AT_comp_dir
        directory = _comp_dir(unit) if d == -1 else ""
    if directory and not directory.startswith("/"):
        # relative to the compilation directory (DWARF 5: directory 0), as clang
        # writes; a relative one (glibc's "./posix") is left out, as elfutils does
        base = dirs[0] if version >= 5 and d != 0 else _comp_dir(unit)
        if base.startswith("/"):
            directory = _join(base, directory)
    return _join(directory, name)


def _comp_dir(unit: Unit) -> str:
    return _text(unit.top.value("DW_AT_comp_dir") or "")


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}" if directory and name else directory or name


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _text_or_none(value) -> str | None:
    return None if value is None else _text(value)
