"""The offsets of a compile unit's function definitions, found by skipping
over DIEs instead of decoding them.

A unit's top level is mostly types and declarations; pyelftools decodes
each DIE through construct (~50 us apiece: 150 ms for libc's few units in a
typical stack). Sizing a DIE from its abbreviation's forms costs a few
microseconds, and only the functions that have code (an abbreviation with
DW_AT_low_pc or DW_AT_ranges) are handed to pyelftools.
"""
from __future__ import annotations

from ..leb128 import uleb

_FIXED = {"DW_FORM_addr": 8, "DW_FORM_data1": 1, "DW_FORM_ref1": 1, "DW_FORM_flag": 1,
          "DW_FORM_strx1": 1, "DW_FORM_addrx1": 1, "DW_FORM_data2": 2, "DW_FORM_ref2": 2,
          "DW_FORM_strx2": 2, "DW_FORM_addrx2": 2, "DW_FORM_strx3": 3, "DW_FORM_addrx3": 3,
          "DW_FORM_data4": 4, "DW_FORM_ref4": 4, "DW_FORM_strx4": 4, "DW_FORM_addrx4": 4,
          "DW_FORM_ref_sup4": 4, "DW_FORM_data8": 8, "DW_FORM_ref8": 8, "DW_FORM_ref_sig8": 8,
          "DW_FORM_ref_sup8": 8, "DW_FORM_data16": 16, "DW_FORM_flag_present": 0,
          "DW_FORM_implicit_const": 0}
_OFFSET = {"DW_FORM_strp", "DW_FORM_line_strp", "DW_FORM_sec_offset", "DW_FORM_ref_addr",
           "DW_FORM_GNU_ref_alt", "DW_FORM_GNU_strp_alt", "DW_FORM_strp_sup"}
_LEB = {"DW_FORM_udata", "DW_FORM_sdata", "DW_FORM_ref_udata", "DW_FORM_strx",
        "DW_FORM_addrx", "DW_FORM_loclistx", "DW_FORM_rnglistx", "DW_FORM_GNU_addr_index",
        "DW_FORM_GNU_str_index"}
_BLOCK_LEN = {"DW_FORM_block1": 1, "DW_FORM_block2": 2, "DW_FORM_block4": 4}
_CU_REFS = {"DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8", "DW_FORM_ref_udata"}
CONTAINERS = {"DW_TAG_namespace", "DW_TAG_class_type", "DW_TAG_structure_type"}
MAX_DEPTH = 64


class Unsupported(Exception):
    """A form this scanner does not size (DW_FORM_indirect, a vendor form)."""


def function_offsets(info, cu) -> list[int]:
    """Section offsets of the DIEs under the unit's top DIE (and inside its
    namespaces and classes) that are subprograms with code. `info` is the
    .debug_info section (bytes). Raises Unsupported, LebError on a LEB128 too
    long, or IndexError on a truncated unit."""
    top = cu.get_top_DIE()
    if not top.has_children:
        return []
    scan = _Scanner(info, cu)
    scan.siblings(top.offset + top.size, 0, True)
    return scan.found


class _Scanner:
    def __init__(self, info, cu):
        self.info = info
        self.cu = cu
        self.abbrevs = cu.get_abbrev_table()
        self.offset_size = 4 if cu.structs.dwarf_format == 32 else 8
        self.end = cu.cu_offset + cu.size
        self.found: list[int] = []
        self._decls: dict[int, tuple] = {}

    def decl(self, code: int) -> tuple:
        """(tag, has_children, has_code, [(form, is_cu_sibling)])."""
        cached = self._decls.get(code)
        if cached is None:
            d = self.abbrevs.get_abbrev(code)
            specs = [(s.form, s.name == "DW_AT_sibling" and s.form in _CU_REFS)
                     for s in d["attr_spec"]]
            names = {s.name for s in d["attr_spec"]}
            has_code = "DW_AT_low_pc" in names or "DW_AT_ranges" in names
            cached = self._decls[code] = (d["tag"], d.has_children(), has_code, specs)
        return cached

    def siblings(self, pos: int, depth: int, collect: bool) -> int:
        """Walks one list of sibling DIEs; returns the offset after its end."""
        while pos < self.end:
            start = pos
            code, pos = uleb(self.info, pos)
            if code == 0:
                return pos
            tag, has_children, has_code, specs = self.decl(code)
            sibling = None
            for form, is_sibling in specs:
                if is_sibling:
                    sibling = self.cu.cu_offset + self.value(form, pos)
                pos = self.skip(form, pos)
            if collect and tag == "DW_TAG_subprogram" and has_code:
                self.found.append(start)
            if not has_children:
                continue
            if collect and tag in CONTAINERS and depth < MAX_DEPTH:
                pos = self.siblings(pos, depth + 1, True)
            elif sibling is not None and sibling > start:
                pos = sibling
            elif depth < MAX_DEPTH:
                pos = self.siblings(pos, depth + 1, False)
            else:
                raise Unsupported("DIEs nested too deep")
        return pos

    def value(self, form: str, pos: int) -> int:
        if form == "DW_FORM_ref_udata":
            return uleb(self.info, pos)[0]
        return int.from_bytes(self.info[pos:pos + _FIXED[form]], "little")

    def skip(self, form: str, pos: int) -> int:
        size = _FIXED.get(form)
        if size is not None:
            return pos + size
        if form in _OFFSET:
            return pos + self.offset_size
        if form in _LEB:
            return uleb(self.info, pos)[1]
        if form == "DW_FORM_string":
            end = self.info.find(b"\0", pos)
            if end < 0:
                raise Unsupported("unterminated string")
            return end + 1
        if form in _BLOCK_LEN:
            n = _BLOCK_LEN[form]
            return pos + n + int.from_bytes(self.info[pos:pos + n], "little")
        if form in ("DW_FORM_block", "DW_FORM_exprloc"):
            length, pos = uleb(self.info, pos)
            return pos + length
        raise Unsupported(form)
