"""A small reader of the DWARF that symbolization needs (DWARF 2-5): unit
headers, abbreviations, one DIE's attributes, range lists and line program
headers.

pyelftools decodes all of this through construct (~25 ms to import, tens of
microseconds a DIE or an abbreviation) and needs whole sections up front;
here a compressed section is inflated only as far as the units looked at
reach (libc's .debug_info is 5.8 MB inflated: ~28 ms for all of it).
Reading off the end of a section raises IndexError, a malformed value
ValueError (LebError, ElfError, DwarfError): the caller's boundary turns
either into its own error.
"""
from __future__ import annotations

import bisect
import struct
import zlib

from ..elf import (ELFCOMPRESS_ZLIB, MAX_DECOMPRESSED, SHF_COMPRESSED, SHT_NOBITS, ElfError,
                   ElfFile)
from ..leb128 import sleb, uleb

FORMS = {0x01: "DW_FORM_addr", 0x03: "DW_FORM_block2", 0x04: "DW_FORM_block4",
         0x05: "DW_FORM_data2", 0x06: "DW_FORM_data4", 0x07: "DW_FORM_data8",
         0x08: "DW_FORM_string", 0x09: "DW_FORM_block", 0x0a: "DW_FORM_block1",
         0x0b: "DW_FORM_data1", 0x0c: "DW_FORM_flag", 0x0d: "DW_FORM_sdata",
         0x0e: "DW_FORM_strp", 0x0f: "DW_FORM_udata", 0x10: "DW_FORM_ref_addr",
         0x11: "DW_FORM_ref1", 0x12: "DW_FORM_ref2", 0x13: "DW_FORM_ref4", 0x14: "DW_FORM_ref8",
         0x15: "DW_FORM_ref_udata", 0x16: "DW_FORM_indirect", 0x17: "DW_FORM_sec_offset",
         0x18: "DW_FORM_exprloc", 0x19: "DW_FORM_flag_present", 0x1a: "DW_FORM_strx",
         0x1b: "DW_FORM_addrx", 0x1c: "DW_FORM_ref_sup4", 0x1d: "DW_FORM_strp_sup",
         0x1e: "DW_FORM_data16", 0x1f: "DW_FORM_line_strp", 0x20: "DW_FORM_ref_sig8",
         0x21: "DW_FORM_implicit_const", 0x22: "DW_FORM_loclistx", 0x23: "DW_FORM_rnglistx",
         0x24: "DW_FORM_ref_sup8", 0x25: "DW_FORM_strx1", 0x26: "DW_FORM_strx2",
         0x27: "DW_FORM_strx3", 0x28: "DW_FORM_strx4", 0x29: "DW_FORM_addrx1",
         0x2a: "DW_FORM_addrx2", 0x2b: "DW_FORM_addrx3", 0x2c: "DW_FORM_addrx4",
         0x1f01: "DW_FORM_GNU_addr_index", 0x1f02: "DW_FORM_GNU_str_index",
         0x1f20: "DW_FORM_GNU_ref_alt", 0x1f21: "DW_FORM_GNU_strp_alt"}
# only the tags and attributes symbolization looks at have names; others stay numbers
TAGS = {0x02: "DW_TAG_class_type", 0x0b: "DW_TAG_lexical_block", 0x11: "DW_TAG_compile_unit",
        0x13: "DW_TAG_structure_type", 0x17: "DW_TAG_union_type",
        0x1d: "DW_TAG_inlined_subroutine", 0x2e: "DW_TAG_subprogram",
        0x39: "DW_TAG_namespace", 0x3c: "DW_TAG_partial_unit", 0x4a: "DW_TAG_skeleton_unit"}
ATTRS = {0x01: "DW_AT_sibling", 0x03: "DW_AT_name", 0x10: "DW_AT_stmt_list",
         0x11: "DW_AT_low_pc", 0x12: "DW_AT_high_pc", 0x1b: "DW_AT_comp_dir",
         0x31: "DW_AT_abstract_origin", 0x47: "DW_AT_specification", 0x55: "DW_AT_ranges",
         0x57: "DW_AT_call_column", 0x58: "DW_AT_call_file", 0x59: "DW_AT_call_line",
         0x6e: "DW_AT_linkage_name", 0x72: "DW_AT_str_offsets_base", 0x73: "DW_AT_addr_base",
         0x74: "DW_AT_rnglists_base", 0x2007: "DW_AT_MIPS_linkage_name"}
SIZED = {"DW_FORM_data1": 1, "DW_FORM_data2": 2, "DW_FORM_data4": 4, "DW_FORM_data8": 8,
          "DW_FORM_data16": 16, "DW_FORM_flag": 1, "DW_FORM_ref1": 1, "DW_FORM_ref2": 2,
          "DW_FORM_ref4": 4, "DW_FORM_ref8": 8, "DW_FORM_ref_sig8": 8, "DW_FORM_ref_sup4": 4,
          "DW_FORM_ref_sup8": 8, "DW_FORM_strx1": 1, "DW_FORM_strx2": 2, "DW_FORM_strx3": 3,
          "DW_FORM_strx4": 4, "DW_FORM_addrx1": 1, "DW_FORM_addrx2": 2, "DW_FORM_addrx3": 3,
          "DW_FORM_addrx4": 4, "DW_FORM_addr": 8}
OFFSETS = {"DW_FORM_strp", "DW_FORM_line_strp", "DW_FORM_sec_offset", "DW_FORM_ref_addr",
            "DW_FORM_GNU_ref_alt", "DW_FORM_GNU_strp_alt", "DW_FORM_strp_sup"}
ULEBS = {"DW_FORM_udata", "DW_FORM_ref_udata", "DW_FORM_strx", "DW_FORM_addrx",
          "DW_FORM_loclistx", "DW_FORM_rnglistx", "DW_FORM_GNU_addr_index",
          "DW_FORM_GNU_str_index"}
BLOCKS = {"DW_FORM_block1": 1, "DW_FORM_block2": 2, "DW_FORM_block4": 4}
STRX = {"DW_FORM_strx", "DW_FORM_strx1", "DW_FORM_strx2", "DW_FORM_strx3", "DW_FORM_strx4",
        "DW_FORM_GNU_str_index"}
ADDRX = {"DW_FORM_addrx", "DW_FORM_addrx1", "DW_FORM_addrx2", "DW_FORM_addrx3",
         "DW_FORM_addrx4", "DW_FORM_GNU_addr_index"}
UNIT_REFS = {"DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8",
             "DW_FORM_ref_udata"}
_CHDR = struct.Struct("<IIQQ")
_INFLATE_STEP = 1 << 16  # compressed bytes fed to zlib at a time
MAX_UNITS = 1 << 20


class DwarfError(ValueError):
    """Malformed DWARF: a bad header or an impossible count."""


class Section:
    """A section's bytes in `data`; a zlib-compressed one (gcc -gz, Debian's
    debug files) is inflated only as far as `need` asks (`data` then grows
    in place: a bytearray that nobody holds a view of)."""

    def __init__(self, elf: ElfFile, name: str):
        section = elf.sections.get(name)
        self.present = section is not None and section.type != SHT_NOBITS
        self.data: bytes | bytearray = b""
        self.name = f"{elf.name}: {name}"
        self._raw = None
        if not self.present:
            return
        if section.flags & SHF_COMPRESSED and section.offset + section.size <= len(elf.data) \
                and section.size >= _CHDR.size:
            kind, _, size, _ = _CHDR.unpack_from(elf.data, section.offset)
            if kind == ELFCOMPRESS_ZLIB and size <= MAX_DECOMPRESSED:
                self._raw = elf.data[section.offset + _CHDR.size:section.offset + section.size]
                self._size, self._fed, self._z = size, 0, zlib.decompressobj()
                self._error = None
                self.data = bytearray()
                return
        self.data = bytes(elf.contents(section))  # raises ElfError on a bad one

    def need(self, end: int) -> bytes | bytearray:
        """`data`, holding at least its first `end` bytes where the section has them."""
        if self._raw is not None and len(self.data) < end:
            while len(self.data) < end and self._fed < len(self._raw):
                chunk = self._raw[self._fed:self._fed + _INFLATE_STEP]
                self._fed += len(chunk)
                try:
                    self.data += self._z.decompress(chunk, self._size - len(self.data) + 1)
                    if len(self.data) > self._size or self._z.unconsumed_tail:
                        self._error = f"{self.name}: larger than its compression header says"
                except zlib.error as e:
                    self._error = f"{self.name}: {e}"
                if self._error:
                    self._fed = len(self._raw)  # what was inflated stays readable
            if len(self.data) < end and self._error:
                raise ElfError(self._error)
        return self.data

    def all(self) -> bytes | bytearray:
        return self.need(1 << 62)


class Abbrev:
    __slots__ = ("tag", "children", "specs")

    def __init__(self, tag, children: bool, specs: list[tuple]):
        self.tag, self.children = tag, children
        self.specs = specs  # (attribute name, form name, implicit constant or None)


class Unit:
    """One unit's header (DWARF 2-5) and its abbreviations."""

    def __init__(self, dwarf: Dwarf, offset: int):
        data = dwarf.info.need(offset + 24)
        length, = struct.unpack_from("<I", data, offset)
        pos = offset + 4
        self.offset_size = 4
        if length == 0xffffffff:
            length, = struct.unpack_from("<Q", data, pos)
            pos += 8
            self.offset_size = 8
        elif length >= 0xfffffff0:
            raise DwarfError(f"unit at {offset:#x}: reserved length {length:#x}")
        self.offset, self.end = offset, pos + length
        data = dwarf.info.need(self.end)
        if self.end > len(data):
            raise DwarfError(f"unit at {offset:#x} runs past .debug_info")
        self.version, = struct.unpack_from("<H", data, pos)
        pos += 2
        if not 2 <= self.version <= 5:
            raise DwarfError(f"unit at {offset:#x}: DWARF version {self.version}")
        if self.version >= 5:
            unit_type, self.addr_size = data[pos], data[pos + 1]
            pos += 2
            abbrev_offset = _offset(data, pos, self.offset_size)
            pos += self.offset_size
            pos += {2: 8 + self.offset_size, 4: 8, 5: 8, 6: 8 + self.offset_size}.get(unit_type, 0)
        else:
            abbrev_offset = _offset(data, pos, self.offset_size)
            pos += self.offset_size
            self.addr_size = data[pos]
            pos += 1
        if self.addr_size != 8:
            raise DwarfError(f"unit at {offset:#x}: address size {self.addr_size}")
        self.first_die = pos
        self.abbrevs = dwarf.abbrevs(abbrev_offset)
        self.dwarf = dwarf
        self.str_offsets_base = 8 if self.offset_size == 4 else 16
        self.addr_base = 8
        self.rnglists_base = 12 if self.offset_size == 4 else 20
        self.top = dwarf.die(self, self.first_die)
        for name in ("DW_AT_str_offsets_base", "DW_AT_addr_base", "DW_AT_rnglists_base"):
            if name in self.top.attrs:
                setattr(self, name[6:], self.top.attrs[name][1])

    def abbrev(self, code: int) -> Abbrev:
        found = self.abbrevs.get(code)
        if found is None:
            raise DwarfError(f"unit at {self.offset:#x}: no abbreviation {code}")
        return found


class Die:
    """One DIE: `attrs` maps an attribute name to (form, raw value);
    `value()` resolves strings and indexed addresses."""
    __slots__ = ("unit", "offset", "tag", "children", "attrs")

    def __init__(self, unit: Unit, offset: int, tag, children: bool, attrs: dict):
        self.unit, self.offset, self.tag, self.children, self.attrs = \
            unit, offset, tag, children, attrs

    def value(self, name: str):
        """The attribute's value: text for a string form, an address for
        an address form, else the number (None: absent or a block)."""
        found = self.attrs.get(name)
        if found is None:
            return None
        form, raw = found
        unit = self.unit
        dwarf = unit.dwarf
        if form == "DW_FORM_strp":
            return dwarf.string(dwarf.str, raw)
        if form == "DW_FORM_line_strp":
            return dwarf.string(dwarf.line_str, raw)
        if form in STRX:
            return dwarf.indexed_string(unit, raw)
        if form in ADDRX:
            return dwarf.address(unit.addr_base + raw * 8)
        return raw

    def ref(self, name: str) -> int | None:
        """The .debug_info offset a reference attribute points at (None:
        absent, or into another file or a type unit)."""
        found = self.attrs.get(name)
        if found is None:
            return None
        form, raw = found
        if form in UNIT_REFS:
            return self.unit.offset + raw
        return raw if form == "DW_FORM_ref_addr" else None


class Dwarf:
    """The DWARF sections of one ELF file, units and DIEs cached by offset."""

    def __init__(self, elf: ElfFile):
        """Raises ElfError (only) when there is no .debug_info to read."""
        self.info = Section(elf, ".debug_info")
        if not self.info.present:
            raise ElfError(f"{elf.name}: .debug_info has no contents")
        self._elf = elf
        self._sections: dict[str, Section] = {}
        self._abbrevs: dict[int, dict[int, Abbrev]] = {}
        self._units: dict[int, Unit] = {}
        self._dies: dict[int, Die] = {}
        self._unit_starts: list[int] | None = None

    def section(self, name: str) -> Section:
        if name not in self._sections:
            self._sections[name] = Section(self._elf, name)
        return self._sections[name]

    str = property(lambda self: self.section(".debug_str"))
    line_str = property(lambda self: self.section(".debug_line_str"))
    str_offsets = property(lambda self: self.section(".debug_str_offsets"))

    def unit(self, offset: int) -> Unit:
        """The unit whose header is at `offset`."""
        if offset not in self._units:
            self._units[offset] = Unit(self, offset)
        return self._units[offset]

    def units(self):
        """Every unit, in section order."""
        self.info.all()
        for offset in self.unit_starts():
            yield self.unit(offset)

    def unit_starts(self) -> list[int]:
        if self._unit_starts is None:
            data = self.info.all()
            starts, pos = [], 0
            while pos + 4 <= len(data) and len(starts) < MAX_UNITS:
                starts.append(pos)
                length, = struct.unpack_from("<I", data, pos)
                pos += 4 + length if length != 0xffffffff else \
                    12 + struct.unpack_from("<Q", data, pos + 4)[0]
            self._unit_starts = starts
        return self._unit_starts

    def unit_holding(self, offset: int, near: Unit) -> Unit:
        """The unit a DIE offset is in (`near` first: references mostly stay in their unit)."""
        if near.first_die <= offset < near.end:
            return near
        starts = self.unit_starts()
        i = bisect.bisect_right(starts, offset) - 1
        if i < 0:
            raise DwarfError(f"DIE offset {offset:#x} before every unit")
        return self.unit(starts[i])

    def abbrevs(self, offset: int) -> dict[int, Abbrev]:
        """The abbreviation table at `offset` of .debug_abbrev."""
        table = self._abbrevs.get(offset)
        if table is not None:
            return table
        section = self.section(".debug_abbrev")
        table = {}
        pos = offset
        step = 1 << 12
        data = section.need(pos + step)
        while True:
            if pos + 64 > len(data):
                step *= 2
                data = section.need(pos + step)
            code, pos = uleb(data, pos)
            if code == 0:
                break
            tag, pos = uleb(data, pos)
            children = data[pos] != 0
            pos += 1
            specs = []
            while True:
                if pos + 32 > len(data):
                    data = section.need(pos + step)
                name, pos = uleb(data, pos)
                form, pos = uleb(data, pos)
                if name == 0 and form == 0:
                    break
                const = None
                if form == 0x21:  # implicit_const: the value is in the abbreviation
                    const, pos = sleb(data, pos)
                specs.append((ATTRS.get(name, name), FORMS.get(form, form), const))
            table[code] = Abbrev(TAGS.get(tag, tag), children, specs)
        self._abbrevs[offset] = table
        return table

    def die(self, unit: Unit, offset: int) -> Die:
        """The DIE at a .debug_info offset inside `unit`."""
        found = self._dies.get(offset)
        if found is not None:
            return found
        data = self.info.data
        if not unit.first_die <= offset < unit.end:
            raise DwarfError(f"DIE offset {offset:#x} outside its unit")
        code, pos = uleb(data, offset)
        if code == 0:
            raise DwarfError(f"null DIE at {offset:#x}")
        abbrev = unit.abbrev(code)
        attrs = {}
        for name, form, const in abbrev.specs:
            if form == "DW_FORM_indirect":
                code, pos = uleb(data, pos)
                form = FORMS.get(code, code)
            if form == "DW_FORM_implicit_const":
                attrs[name] = (form, const)
                continue
            raw, pos = self.read(unit, form, data, pos)
            attrs[name] = (form, raw)
        die = self._dies[offset] = Die(unit, offset, abbrev.tag, abbrev.children, attrs)
        return die

    def read(self, unit: Unit, form, data, pos: int) -> tuple:
        """(raw value, position after it) of one attribute."""
        size = SIZED.get(form)
        if size is not None:
            return int.from_bytes(data[pos:pos + size], "little"), pos + size
        if form in OFFSETS:
            return _offset(data, pos, unit.offset_size), pos + unit.offset_size
        if form in ULEBS:
            return uleb(data, pos)
        if form == "DW_FORM_sdata":
            return sleb(data, pos)
        if form == "DW_FORM_flag_present":
            return True, pos
        if form == "DW_FORM_string":
            end = data.index(b"\0", pos)
            return bytes(data[pos:end]).decode("utf-8", "replace"), end + 1
        if form in BLOCKS:
            n = BLOCKS[form]
            return None, pos + n + int.from_bytes(data[pos:pos + n], "little")
        if form in ("DW_FORM_block", "DW_FORM_exprloc"):
            length, pos = uleb(data, pos)
            return None, pos + length
        raise DwarfError(f"unknown form {form}")

    def string(self, section: Section, offset: int) -> str:
        data = section.all()
        if not 0 <= offset < len(data):
            raise DwarfError(f"string offset {offset:#x} outside its section")
        end = data.index(b"\0", offset)
        return bytes(data[offset:end]).decode("utf-8", "replace")

    def indexed_string(self, unit: Unit, index: int) -> str:
        """A DW_FORM_strx string: through the unit's .debug_str_offsets."""
        at = unit.str_offsets_base + index * unit.offset_size
        data = self.str_offsets.need(at + unit.offset_size)
        return self.string(self.str, _offset(data, at, unit.offset_size))

    def address(self, at: int) -> int:
        data = self.section(".debug_addr").need(at + 8)
        if at + 8 > len(data):
            raise DwarfError(f".debug_addr offset {at:#x} outside the section")
        return struct.unpack_from("<Q", data, at)[0]

    def ranges(self, die: Die) -> list[tuple[int, int]]:
        """The [low, high) ranges of a DIE with code: DW_AT_low_pc and
        DW_AT_high_pc, or DW_AT_ranges (.debug_ranges, .debug_rnglists)."""
        attrs = die.attrs
        if "DW_AT_ranges" in attrs:
            return self._range_list(die)
        low, high = die.value("DW_AT_low_pc"), die.value("DW_AT_high_pc")
        if low is None or high is None:
            return []
        # an address form is the end itself; a constant is the length (DWARF 4+)
        form = attrs["DW_AT_high_pc"][0]
        return [(low, high if form == "DW_FORM_addr" or form in ADDRX else low + high)]

    def _range_list(self, die: Die) -> list[tuple[int, int]]:
        unit = die.unit
        form, raw = die.attrs["DW_AT_ranges"]
        base = unit.top.value("DW_AT_low_pc") or 0
        out = []
        if unit.version < 5:
            data = self.section(".debug_ranges").all()
            pos = raw
            while True:
                begin, end = struct.unpack_from("<QQ", data, pos)
                pos += 16
                if begin == 0 and end == 0:
                    return out
                if begin == 0xffffffffffffffff:
                    base = end
                else:
                    out.append((base + begin, base + end))
        section = self.section(".debug_rnglists")
        data = section.all()
        if form == "DW_FORM_rnglistx":
            at = unit.rnglists_base + raw * unit.offset_size
            pos = unit.rnglists_base + _offset(data, at, unit.offset_size)
        else:
            pos = raw
        while True:
            kind = data[pos]
            pos += 1
            if kind == 0:  # DW_RLE_end_of_list
                return out
            if kind == 1:  # base_addressx
                index, pos = uleb(data, pos)
                base = self.address(unit.addr_base + index * 8)
            elif kind in (2, 3):  # startx_endx, startx_length
                index, pos = uleb(data, pos)
                second, pos = uleb(data, pos)
                start = self.address(unit.addr_base + index * 8)
                end = self.address(unit.addr_base + second * 8) if kind == 2 else start + second
                out.append((start, end))
            elif kind == 4:  # offset_pair
                begin, pos = uleb(data, pos)
                end, pos = uleb(data, pos)
                out.append((base + begin, base + end))
            elif kind == 5:  # base_address
                base, = struct.unpack_from("<Q", data, pos)
                pos += 8
            elif kind == 6:  # start_end
                start, end = struct.unpack_from("<QQ", data, pos)
                pos += 16
                out.append((start, end))
            elif kind == 7:  # start_length
                start, = struct.unpack_from("<Q", data, pos)
                length, pos = uleb(data, pos + 8)
                out.append((start, start + length))
            else:
                raise DwarfError(f"range list entry kind {kind}")

    def line_header(self, unit: Unit) -> LineHeader | None:
        """The header of the unit's line program (DW_AT_stmt_list), or None."""
        offset = unit.top.value("DW_AT_stmt_list")
        section = self.section(".debug_line")
        if offset is None or not section.present:
            return None
        return LineHeader(self, unit, section, offset)


class LineHeader:
    """A line program's header (DWARF 2-5, .debug_line 6.2.4): what
    line_program.decode needs, the file and directory tables, and where the
    program's opcodes are."""

    def __init__(self, dwarf: Dwarf, unit: Unit, section: Section, offset: int):
        data = section.need(offset + 16)
        length, = struct.unpack_from("<I", data, offset)
        pos, offset_size = offset + 4, 4
        if length == 0xffffffff:
            length, = struct.unpack_from("<Q", data, pos)
            pos, offset_size = pos + 8, 8
        self.end = pos + length
        data = section.need(self.end)
        if self.end > len(data):
            raise DwarfError(f"line program at {offset:#x} runs past .debug_line")
        self.data = data
        self.version, = struct.unpack_from("<H", data, pos)
        pos += 2
        if not 2 <= self.version <= 5:
            raise DwarfError(f"line program at {offset:#x}: version {self.version}")
        if self.version >= 5:
            pos += 2  # address_size, segment_selector_size
        header_length = _offset(data, pos, offset_size)
        pos += offset_size
        self.start = pos + header_length
        self.minimum_instruction_length = data[pos]
        pos += 2 if self.version >= 4 else 1  # maximum_operations_per_instruction
        pos += 1  # default_is_stmt
        self.line_base = data[pos] - 256 if data[pos] >= 128 else data[pos]
        self.line_range, self.opcode_base = data[pos + 1], data[pos + 2]
        pos += 3
        self.standard_opcode_lengths = list(data[pos:pos + max(self.opcode_base - 1, 0)])
        pos += max(self.opcode_base - 1, 0)
        self._unit, self._offset_size = unit, offset_size
        if self.version >= 5:
            self.dirs, pos = self._entries(dwarf, data, pos)
            self.dirs = [name for name, _ in self.dirs]
            self.files, pos = self._entries(dwarf, data, pos)
        else:
            self.dirs, self.files = [], []
            while data[pos]:
                end = data.index(b"\0", pos)
                self.dirs.append(bytes(data[pos:end]).decode("utf-8", "replace"))
                pos = end + 1
            pos += 1
            while data[pos]:
                end = data.index(b"\0", pos)
                name = bytes(data[pos:end]).decode("utf-8", "replace")
                directory, pos = uleb(data, end + 1)
                _, pos = uleb(data, pos)  # modification time
                _, pos = uleb(data, pos)  # length
                self.files.append((name, directory))

    def __getitem__(self, key: str):  # line_program.decode reads the header as a mapping
        return getattr(self, key)

    def _entries(self, dwarf: Dwarf, data, pos: int) -> tuple[list[tuple[str, int]], int]:
        """A DWARF 5 directory or file table: (path, directory index) per entry."""
        count = data[pos]
        pos += 1
        formats = []
        for _ in range(count):
            kind, pos = uleb(data, pos)
            form, pos = uleb(data, pos)
            formats.append((kind, FORMS.get(form, form)))
        entries, pos = uleb(data, pos)
        if entries and not formats or entries > self.start - pos:
            raise DwarfError(f"line table with {entries} entries of {len(formats)} fields")
        out = []
        for _ in range(entries):
            name, directory = "", 0
            for kind, form in formats:
                if form == "DW_FORM_line_strp":
                    raw = _offset(data, pos, self._offset_size)
                    value, pos = dwarf.string(dwarf.line_str, raw), pos + self._offset_size
                elif form == "DW_FORM_strp":
                    raw = _offset(data, pos, self._offset_size)
                    value, pos = dwarf.string(dwarf.str, raw), pos + self._offset_size
                elif form in STRX:
                    raw, pos = dwarf.read(self._unit, form, data, pos)
                    value = dwarf.indexed_string(self._unit, raw)
                else:
                    value, pos = dwarf.read(self._unit, form, data, pos)
                if kind == 1:  # DW_LNCT_path
                    name = value if isinstance(value, str) else ""
                elif kind == 2:  # DW_LNCT_directory_index
                    directory = value if isinstance(value, int) else 0
            out.append((name, directory))
        return out, pos


def _offset(data, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise IndexError("read past the end of a section")
    return int.from_bytes(data[pos:pos + size], "little")
