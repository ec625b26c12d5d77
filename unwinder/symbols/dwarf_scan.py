"""A compile unit's function definitions and the namespaces and classes
that hold its functions, found by skipping over DIEs instead of decoding
them.

A unit's top level is mostly types and declarations; decoding every DIE
(pyelftools: ~50 us apiece, 150 ms for libc's few units in a typical stack,
seconds for a Rust std's) is not needed to find functions. Sizing a DIE from its
abbreviation's forms costs a few microseconds (runs of fixed-size forms are
skipped in one step), a function's DW_AT_low_pc/DW_AT_high_pc are read on
the way, and only the function that holds a pc is decoded (dwarf.Dwarf.die).
"""
from __future__ import annotations


from ..leb128 import uleb
from .dwarf import BLOCKS, FORMS, OFFSETS, SIZED, ULEBS, UNIT_REFS

_FIXED = {**SIZED, "DW_FORM_flag_present": 0, "DW_FORM_implicit_const": 0}
_LEB = ULEBS | {"DW_FORM_sdata"}
CONTAINERS = {"DW_TAG_namespace", "DW_TAG_class_type", "DW_TAG_structure_type",
              "DW_TAG_union_type"}
MAX_DEPTH = 64
_HIGH_CONST = {"DW_FORM_data1", "DW_FORM_data2", "DW_FORM_data4", "DW_FORM_data8"}


class Unsupported(ValueError):
    """A form this scanner does not size (a vendor form), or DIEs nested too deep."""


class UnitScan:
    """functions: (DIE offset, low, high) per subprogram with code; low and
    high are None where they are not plain addresses (DW_AT_ranges, addrx):
    the DIE must be decoded for them. parents: DIE offset -> offset of the
    namespace or class it is declared in, for the subprograms and
    containers inside one (top-level ones have none). A plain class:
    dataclasses (with inspect, ast, dis) cost ~10 ms of a cold run."""
    __slots__ = ("functions", "parents")

    def __init__(self):
        self.functions: list[tuple[int, int | None, int | None]] = []
        self.parents: dict[int, int] = {}


class Scanner:
    """One unit's DIEs read by size. `info` is the .debug_info section's
    bytes (at least up to the unit's end), `unit` a dwarf.Unit. Each method
    raises Unsupported, DwarfError on an unknown abbreviation, LebError on
    a LEB128 too long, or IndexError on a truncated unit."""

    def __init__(self, info, unit):
        self.info = info
        self.unit_offset = unit.offset
        self.abbrevs = unit
        self.offset_size = unit.offset_size
        self.first_die = unit.first_die
        self.end = unit.end
        self.out = UnitScan()
        self._decls: dict[int, tuple] = {}

    def unit(self) -> UnitScan:
        """The whole unit's functions and scopes (call once)."""
        code, pos = uleb(self.info, self.first_die)
        _, has_children, _, steps, _ = self.decl(code)
        pos, _ = self.attributes(pos, steps)
        if has_children:
            self.siblings(pos, 0, None)
        return self.out

    def children(self, offset: int, tags) -> list[tuple[int, int | None, int | None]]:
        """(offset, low, high) of the children of the DIE at `offset` whose
        tag is in `tags` and that have code, their subtrees skipped."""
        code, pos = uleb(self.info, offset)
        if code == 0:
            return []
        _, has_children, _, steps, _ = self.decl(code)
        pos, _ = self.attributes(pos, steps)
        out = []
        while has_children and pos < self.end:
            start = pos
            code, pos = uleb(self.info, pos)
            if code == 0:
                break
            tag, has_children_, has_code, steps, specs = self.decl(code)
            if tag in tags and has_code:
                out.append((start, *self.pc_range(pos, specs)))
            pos, sibling = self.attributes(pos, steps)
            if has_children_:
                pos = sibling if sibling is not None and sibling > start \
                    else self.siblings(pos, 1, None)
        return out

    def attributes(self, pos: int, steps) -> tuple[int, int | None]:
        """Skips one DIE's attributes: (the offset after them, its sibling)."""
        sibling = None
        for step in steps:
            if step.__class__ is int:
                pos += step
            elif step.__class__ is tuple:
                sibling = self.unit_offset + self.value(step[0], pos)
                pos = self.skip(step[0], pos)
            else:
                pos = self.skip(step, pos)
        return pos, sibling

    def decl(self, code: int) -> tuple:
        """(tag, has_children, has_code, steps, specs): steps skip the DIE's
        attributes (an int: that many bytes; a form: one value of it;
        (form,): the CU-relative DW_AT_sibling); specs are (name, form)."""
        cached = self._decls.get(code)
        if cached is None:
            d = self.abbrevs.abbrev(code)
            specs = [(name, form) for name, form, _ in d.specs]
            steps: list = []
            for name, form in specs:
                size = self.fixed(form)
                if name == "DW_AT_sibling" and form in UNIT_REFS:
                    steps.append((form,))
                elif size is not None and steps and isinstance(steps[-1], int):
                    steps[-1] += size
                else:
                    steps.append(form if size is None else size)
            names = {name for name, _ in specs}
            has_code = "DW_AT_low_pc" in names or "DW_AT_ranges" in names
            cached = self._decls[code] = (d.tag, d.children, has_code, steps, specs)
        return cached

    def fixed(self, form: str) -> int | None:
        if form in OFFSETS:
            return self.offset_size
        return _FIXED.get(form)

    def siblings(self, pos: int, depth: int, parent: int | None) -> int:
        """Walks one list of sibling DIEs, recording what is in `parent` (a
        container, or None at the top level when `depth` is 0; not recorded
        below a DIE of another kind); returns the offset after its end."""
        collect = parent is not None or depth == 0
        while pos < self.end:
            start = pos
            code, pos = uleb(self.info, pos)
            if code == 0:
                return pos
            tag, has_children, has_code, steps, specs = self.decl(code)
            if collect and tag == "DW_TAG_subprogram":
                if parent is not None:
                    self.out.parents[start] = parent
                if has_code:
                    self.out.functions.append((start, *self.pc_range(pos, specs)))
            pos, sibling = self.attributes(pos, steps)
            if not has_children:
                continue
            if collect and tag in CONTAINERS and depth < MAX_DEPTH:
                if parent is not None:
                    self.out.parents[start] = parent
                pos = self.siblings(pos, depth + 1, start)
            elif sibling is not None and sibling > start:
                pos = sibling
            elif depth < MAX_DEPTH:
                pos = self.siblings(pos, depth + 1, None)
            else:
                raise Unsupported("DIEs nested too deep")
        return pos

    def pc_range(self, pos: int, specs) -> tuple[int | None, int | None]:
        """DW_AT_low_pc and the end from DW_AT_high_pc (an address, or a
        length from low_pc), where both are plain; else (None, None)."""
        low = high = None
        high_is_length = False
        for name, form in specs:
            if name == "DW_AT_low_pc" and form == "DW_FORM_addr":
                low = self.value(form, pos)
            elif name == "DW_AT_high_pc" and (form == "DW_FORM_addr" or form in _HIGH_CONST):
                high, high_is_length = self.value(form, pos), form != "DW_FORM_addr"
            pos = self.skip(form, pos)
        if low is None or high is None:
            return None, None
        return low, low + high if high_is_length else high

    def value(self, form: str, pos: int) -> int:
        if form == "DW_FORM_ref_udata":
            return uleb(self.info, pos)[0]
        return int.from_bytes(self.info[pos:pos + _FIXED[form]], "little")

    def skip(self, form: str, pos: int) -> int:
        size = _FIXED.get(form)
        if size is not None:
            return pos + size
        if form in OFFSETS:
            return pos + self.offset_size
        if form in _LEB:
            return uleb(self.info, pos)[1]
        if form == "DW_FORM_string":
            end = self.info.find(b"\0", pos)
            if end < 0:
                raise Unsupported("unterminated string")
            return end + 1
        if form in BLOCKS:
            n = BLOCKS[form]
            return pos + n + int.from_bytes(self.info[pos:pos + n], "little")
        if form in ("DW_FORM_block", "DW_FORM_exprloc"):
            length, pos = uleb(self.info, pos)
            return pos + length
        if form == "DW_FORM_indirect":  # the form is in the DIE, before the value
            code, pos = uleb(self.info, pos)
            if code != 0x16:
                return self.skip(FORMS.get(code, code), pos)
        raise Unsupported(form)
