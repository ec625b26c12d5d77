"""CFI over hand-assembled .eh_frame / .debug_frame bytes: encodings, entries, every DW_CFA op, step()."""
from __future__ import annotations

import struct

import pytest

from unwinder.cfi import (
    EXPRESSION,
    OFFSET,
    REGISTER,
    SAME_VALUE,
    UNDEFINED,
    VAL_EXPRESSION,
    VAL_OFFSET,
    CfaRule,
    CfiError,
    CfiTable,
    Rule,
)
from dict_regs import step
from unwinder.cfi.encoding import PointerBases, read_pointer, sleb, uleb
from unwinder.leb128 import encode_sleb as S, encode_uleb as U
from unwinder.regs import NAMES, R12, RAX, RBP, RBX, RDI, RIP, RSP
from unwinder.space import FakeSpace, MemoryFault, read_u64

EH_ADDR = 0x40_0000   # link-time address of the synthetic .eh_frame
HDR_ADDR = 0x3F_F000  # ... and of its .eh_frame_hdr
FUNC = 0x1000         # the first synthetic function
MASK = (1 << 64) - 1


# --- a tiny assembler -------------------------------------------------------------------------

def enc_ptr(value: int, enc: int, field_addr: int, text: int = 0, data: int = 0) -> bytes:
    app, fmt = enc & 0x70, enc & 0x0F
    value -= {0x00: 0, 0x10: field_addr, 0x20: text, 0x30: data}[app]
    if fmt == 0x01:
        return U(value)
    if fmt == 0x09:
        return S(value)
    code = {0x00: "Q", 0x02: "H", 0x03: "I", 0x04: "Q", 0x0A: "h", 0x0B: "i", 0x0C: "q"}[fmt]
    if code.isupper():
        value &= (1 << (8 * struct.calcsize(code))) - 1
    return struct.pack("<" + code, value)


def block(expr: bytes) -> bytes:
    return U(len(expr)) + expr


class Frame:
    """Builds a .eh_frame (or .debug_frame) section entry by entry."""

    def __init__(self, eh: bool = True, addr: int = EH_ADDR, text: int = 0, data: int = 0):
        self.eh, self.addr, self.text, self.data = eh, addr, text, data
        self.buf = bytearray()
        self.fdes: list[tuple[int, int]] = []  # (start, offset)

    def _entry(self, ident, body, dwarf64: bool) -> int:
        off = len(self.buf)
        size = 8 if dwarf64 else 4
        id_pos = off + (12 if dwarf64 else 4)
        content = ident(id_pos).to_bytes(size, "little") + body(id_pos + size)
        length = (b"\xff\xff\xff\xff" + struct.pack("<Q", len(content)) if dwarf64
                  else struct.pack("<I", len(content)))
        self.buf += length + content
        return off

    def cie(self, insns: bytes = b"", aug: bytes = b"zR", aug_data: bytes = b"\x1b", version: int = 1,
            caf: int = 1, daf: int = -8, ra: int = 16, dwarf64: bool = False,
            v4_sizes: bytes = b"\x08\x00", eh_ptr: bytes = b"") -> int:
        cie_id = 0 if self.eh else (MASK if dwarf64 else 0xFFFF_FFFF)
        body = (bytes([version]) + aug + b"\0" + (v4_sizes if version == 4 else b"") + eh_ptr
                + U(caf) + S(daf) + (bytes([ra]) if version == 1 else U(ra))
                + (block(aug_data) if aug.startswith(b"z") else b"") + insns)
        return self._entry(lambda _: cie_id, lambda _: body, dwarf64)

    def fde(self, cie: int, start: int, length: int, insns: bytes = b"", enc: int = 0x1B,
            aug: bool = True, aug_data: bytes = b"", dwarf64: bool = False, addr_size: int = 8) -> int:
        def body(pos: int) -> bytes:
            if self.eh:
                first = enc_ptr(start, enc, self.addr + pos, self.text, self.data)
                second = enc_ptr(length, enc & 0x0F, 0)
            else:
                code = "<Q" if addr_size == 8 else "<I"
                first, second = struct.pack(code, start), struct.pack(code, length)
            return first + second + (block(aug_data) if aug else b"") + insns
        ident = (lambda id_pos: id_pos - cie) if self.eh else (lambda _: cie)
        off = self._entry(ident, body, dwarf64)
        self.fdes.append((start, off))
        return off

    def bytes(self, terminate: bool = True) -> bytes:
        return bytes(self.buf) + (b"\0\0\0\0" if terminate and self.eh else b"")

    def hdr(self, table_enc: int = 0x3B, hdr_addr: int = HDR_ADDR, entries=None) -> bytes:
        entries = sorted(self.fdes) if entries is None else entries
        out = bytearray(b"\x01\x1b\x03" + bytes([table_enc]))
        out += struct.pack("<i", self.addr - (hdr_addr + 4))
        out += struct.pack("<I", len(entries))
        for start, off in entries:
            for value in (start, self.addr + off):
                out += enc_ptr(value, table_enc, hdr_addr + len(out), data=hdr_addr)
        return bytes(out)

    def table(self, with_hdr: bool = True) -> CfiTable:
        if not self.eh:
            return CfiTable.from_debug_frame(self.bytes())
        return CfiTable.from_eh_frame(self.bytes(), self.addr, self.hdr() if with_hdr else None,
                                      HDR_ADDR if with_hdr else None, self.text, self.data)


# The CIE initial instructions gcc writes for x86-64: CFA = rsp+8, ra at cfa-8.
GCC_CIE = b"\x0c\x07\x08" + b"\x90\x01"


def one_fde(insns: bytes, cie_insns: bytes = GCC_CIE, length: int = 0x100, **cie_kw) -> CfiTable:
    frame = Frame()
    cie = frame.cie(cie_insns, **cie_kw)
    frame.fde(cie, FUNC, length, insns)
    return frame.table()


def rules(row) -> dict[int, Rule]:
    return dict(row.rules)


# --- encodings ------------------------------------------------------------------------------

@pytest.mark.parametrize("value, encoded", [
    (0, b"\x00"), (2, b"\x02"), (127, b"\x7f"), (128, b"\x80\x01"), (624485, b"\xe5\x8e\x26"),
    (2**64 - 1, b"\xff" * 9 + b"\x01")])
def test_uleb(value, encoded):
    assert U(value) == encoded
    assert uleb(encoded + b"\xaa", 0) == (value, len(encoded))


@pytest.mark.parametrize("value, encoded", [
    (0, b"\x00"), (2, b"\x02"), (-2, b"\x7e"), (63, b"\x3f"), (64, b"\xc0\x00"), (-64, b"\x40"),
    (-65, b"\xbf\x7f"), (-128, b"\x80\x7f"), (-123456, b"\xc0\xbb\x78"), (-(2**63), S(-(2**63)))])
def test_sleb(value, encoded):
    assert S(value) == encoded
    assert sleb(encoded, 0) == (value, len(encoded))


def test_leb_too_long_and_truncated():
    with pytest.raises(CfiError):
        uleb(b"\x80" * 40 + b"\x00", 0)
    with pytest.raises(CfiError):
        sleb(b"\xff" * 40 + b"\x00", 0)
    with pytest.raises(IndexError):  # the table layer turns this into CfiError
        uleb(b"\x80\x80", 0)


@pytest.mark.parametrize("enc", [0x00, 0x01, 0x02, 0x03, 0x04, 0x09, 0x0A, 0x0B, 0x0C,
                                 0x10, 0x1B, 0x1C, 0x19, 0x20, 0x23, 0x30, 0x3B, 0x33])
def test_read_pointer_each_encoding(enc):
    bases = PointerBases(section_addr=0x5000, text=0x7000, data=0x6000)
    value = 0x7123 if enc & 0x0F in (0x02, 0x0A) and enc & 0x70 == 0 else 0x7800
    prefix = b"\xee" * 3
    data = prefix + enc_ptr(value, enc, 0x5000 + 3, text=0x7000, data=0x6000) + b"\xcc"
    assert read_pointer(data, 3, enc, bases) == (value, len(data) - 1)


def test_read_pointer_funcrel_aligned_and_signed():
    bases = PointerBases(section_addr=0x5001)
    assert read_pointer(struct.pack("<i", -0x10), 0, 0x4B, bases, func=0x9000)[0] == 0x8FF0
    # aligned: skip to the next 8-byte boundary of the *address* (0x5001 + 7 = 0x5008)
    data = b"\x00" * 7 + struct.pack("<Q", 0xDEADBEEF)
    assert read_pointer(data, 0, 0x50, bases) == (0xDEADBEEF, 15)
    assert read_pointer(struct.pack("<q", -1), 0, 0x0C, bases)[0] == MASK
    with pytest.raises(CfiError):
        read_pointer(b"\x00" * 8, 0, 0x05, bases)
    with pytest.raises(CfiError):
        read_pointer(b"\x00" * 8, 0, 0x63, bases)


# --- CIE / FDE entries and the index ------------------------------------------------------

@pytest.mark.parametrize("enc", [0x1B, 0x03, 0x04, 0x0B, 0x0C, 0x00, 0x01, 0x09, 0x23, 0x33])
def test_fde_address_encodings(enc):
    frame = Frame(text=0x800, data=0x900)
    cie = frame.cie(GCC_CIE, aug_data=bytes([enc]))
    frame.fde(cie, FUNC, 0x20, b"\x41\x0e\x10", enc=enc)
    for table in (frame.table(), frame.table(with_hdr=False)):
        assert table.row_for(FUNC).cfa == CfaRule(RSP, 8)
        assert table.row_for(FUNC + 1).cfa == CfaRule(RSP, 16)
        assert table.row_for(FUNC + 0x1F).fde_end == FUNC + 0x20
        assert table.row_for(FUNC + 0x20) is None
        assert table.row_for(FUNC - 1) is None


def test_indirect_fde_address_is_an_error():
    frame = Frame()
    cie = frame.cie(GCC_CIE, aug_data=b"\x9b")
    off = frame.fde(cie, FUNC, 0x20)
    table = CfiTable.from_eh_frame(frame.bytes(), EH_ADDR, frame.hdr(entries=[(FUNC, off)]), HDR_ADDR)
    with pytest.raises(CfiError, match="encoding 0x9b"):
        table.row_for(FUNC)


NO_AUG = {"aug": b"", "aug_data": b""}


@pytest.mark.parametrize("cie_kw, patch, message", [
    ({"version": 2}, None, "CIE version 2"),
    ({"version": 4, "v4_sizes": b"\x02\x00", **NO_AUG}, None, "address size 2"),
    ({}, (9, b"z" * 13), "unterminated"),                     # the augmentation runs on
    ({"aug_data": b"\x1b" * 40}, (0, struct.pack("<I", 14)), "past its end"),
    ({}, (0, struct.pack("<I", 0xFFFF_FFF5)), "reserved"),
    ({}, (0, struct.pack("<I", 0xFFFF)), "past the section end"),
])
def test_corrupt_cies(cie_kw, patch, message):
    frame = Frame()
    cie = frame.cie(GCC_CIE, **cie_kw)
    plain = cie_kw.get("aug") == b""
    frame.fde(cie, FUNC, 0x20, enc=0x00 if plain else 0x1B, aug=not plain)
    data = bytearray(frame.bytes())
    if patch:
        data[patch[0]:patch[0] + len(patch[1])] = patch[1]
    table = CfiTable.from_eh_frame(bytes(data), EH_ADDR, frame.hdr(), HDR_ADDR)
    with pytest.raises(CfiError, match=message):
        table.row_for(FUNC)


def test_fde_pointing_at_an_fde_and_bad_address_size():
    frame = Frame()
    cie = frame.cie(GCC_CIE)
    first = frame.fde(cie, FUNC, 0x10)
    frame.fde(first, FUNC + 0x10, 0x10)
    with pytest.raises(CfiError, match="no CIE"):
        frame.table().row_for(FUNC + 0x10)
    with pytest.raises(CfiError, match="address size"):
        CfiTable.from_debug_frame(b"", address_size=2)


def test_lookup_between_and_after_fdes():
    frame = Frame()
    cie = frame.cie(GCC_CIE)
    frame.fde(cie, 0x3000, 0x10, b"\x41\x0e\x20")
    frame.fde(cie, 0x1000, 0x10, b"\x41\x0e\x10")
    frame.fde(cie, 0x2000, 0x10, b"\x41\x0e\x18")
    for table in (frame.table(), frame.table(with_hdr=False)):
        assert len(table) == 3
        assert [table.row_for(pc + 1).cfa.offset for pc in (0x1000, 0x2000, 0x3000)] == [16, 24, 32]
        assert table.row_for(0x1010) is None
        assert table.row_for(0x2FFF) is None
        assert table.row_for(0x3010) is None
        assert table.row_for(0) is None


def test_cie_augmentations_personality_lsda_signal():
    frame = Frame()
    # 'P' with an indirect pcrel personality (skipped, never dereferenced), 'L' pcrel, 'R', 'S'
    aug_data = b"\x9b" + struct.pack("<i", 0x1234) + b"\x1b" + b"\x1b"
    cie = frame.cie(GCC_CIE, aug=b"zPLRS", aug_data=aug_data)
    frame.fde(cie, FUNC, 0x10, aug_data=struct.pack("<i", 0))  # the LSDA pointer
    row = frame.table().row_for(FUNC)
    assert row.signal_frame and row.ra_reg == 16
    assert rules(row) == {RIP: Rule(OFFSET, -8)}


@pytest.mark.parametrize("aug, aug_data", [
    (b"zRB", b"\x1b"), (b"zRG", b"\x1b"), (b"zRX", b"\x1b\x99\x98\x97"),  # unknown: skipped by 'z'
    (b"zPR", b"\x01" + U(0x123456) + b"\x1b"),                          # uleb personality
    (b"zPR", b"\xff\x1b"),                                             # omitted personality
])
def test_cie_augmentation_skipping(aug, aug_data):
    table = one_fde(b"\x41\x0e\x10", aug=aug, aug_data=aug_data)
    assert table.row_for(FUNC + 1).cfa == CfaRule(RSP, 16)


def test_old_gcc_eh_augmentation():
    frame = Frame()
    cie = frame.cie(GCC_CIE, aug=b"eh", aug_data=b"", eh_ptr=struct.pack("<Q", 0xABCDEF))
    frame.fde(cie, FUNC, 0x10, b"\x41\x0e\x10", enc=0x00, aug=False)
    assert frame.table().row_for(FUNC + 1).cfa == CfaRule(RSP, 16)


def test_unknown_augmentation_without_z_is_an_error():
    frame = Frame()
    cie = frame.cie(GCC_CIE, aug=b"Q", aug_data=b"")
    frame.fde(cie, FUNC, 0x10, enc=0x00, aug=False)
    with pytest.raises(CfiError):
        frame.table().row_for(FUNC)


def test_cie_version_3_uleb_return_column_and_64bit_entries():
    frame = Frame()
    cie = frame.cie(b"\x0c\x07\x08\x05\x90\x01\x01", version=3, ra=0x90, dwarf64=True)
    frame.fde(cie, FUNC, 0x10, b"\x41\x0e\x10", dwarf64=True)
    frame.fde(cie, FUNC + 0x10, 0x10, b"\x42\x0e\x18")
    table = frame.table()
    row = table.row_for(FUNC + 1)
    assert row.ra_reg == 0x90 and rules(row) == {0x90: Rule(OFFSET, -8)}
    assert table.row_for(FUNC + 0x12).cfa.offset == 24
    assert frame.table(with_hdr=False).row_for(FUNC + 0x12).cfa.offset == 24


@pytest.mark.parametrize("version", [1, 3, 4])
@pytest.mark.parametrize("dwarf64", [False, True])
def test_debug_frame(version, dwarf64):
    frame = Frame(eh=False)
    cie = frame.cie(GCC_CIE, aug=b"", aug_data=b"", version=version, dwarf64=dwarf64)
    frame.fde(cie, 0x40_1000, 0x30, b"\x44\x0e\x10\x86\x02", aug=False, dwarf64=dwarf64)
    frame.fde(cie, 0x40_0000, 0x10, b"\x41\x0e\x20", aug=False)
    table = frame.table()
    assert len(table) == 2
    assert table.row_for(0x40_0001).cfa == CfaRule(RSP, 32)
    row = table.row_for(0x40_1004)
    assert row.cfa == CfaRule(RSP, 16) and rules(row)[RBP] == Rule(OFFSET, -16)
    assert row.fde_start == 0x40_1000 and row.fde_end == 0x40_1030
    assert table.row_for(0x40_1030) is None


def test_debug_frame_v4_with_4_byte_addresses():
    frame = Frame(eh=False)
    cie = frame.cie(GCC_CIE, aug=b"", aug_data=b"", version=4, v4_sizes=b"\x04\x00")
    frame.fde(cie, 0x8000, 0x10, b"\x41\x0e\x10", aug=False, addr_size=4)
    assert frame.table().row_for(0x8001).cfa == CfaRule(RSP, 16)


def test_hdr_general_encoding_unsorted_and_corrupt_fall_back():
    frame = Frame()
    cie = frame.cie(GCC_CIE)
    frame.fde(cie, 0x2000, 0x10, b"\x41\x0e\x18")
    frame.fde(cie, 0x1000, 0x10, b"\x41\x0e\x10")
    data = frame.bytes()
    good = [(0x1000, frame.fdes[1][1]), (0x2000, frame.fdes[0][1])]
    hdrs = {
        "sdata8 datarel": frame.hdr(0x3C),
        "udata4 absolute": frame.hdr(0x03),
        "sdata8 pcrel": frame.hdr(0x1C),
        "uleb absolute": frame.hdr(0x01),
        "unsorted": frame.hdr(entries=good[::-1]),
        "bad version": b"\x02" + frame.hdr()[1:],
        "truncated": frame.hdr()[:-3],
        "no table": frame.hdr()[:4].replace(b"\x3b", b"\xff") + frame.hdr()[4:12],
        "offset outside": frame.hdr(entries=[(0x1000, 0x10_0000)]),
        "another eh_frame": frame.hdr()[:4] + struct.pack("<i", 0x100) + frame.hdr()[8:],
        "count too large": frame.hdr(0x01)[:8] + struct.pack("<I", 1000) + frame.hdr(0x01)[12:],
        "empty": b"",
    }
    for name, hdr in hdrs.items():
        table = CfiTable.from_eh_frame(data, EH_ADDR, hdr, HDR_ADDR)
        assert len(table) == 2, name
        assert table.row_for(0x1001).cfa.offset == 16, name
        assert table.row_for(0x2001).cfa.offset == 24, name


def test_hdr_entry_pointing_to_a_cie_is_an_error():
    frame = Frame()
    cie = frame.cie(GCC_CIE)
    frame.fde(cie, 0x1000, 0x10)
    table = CfiTable.from_eh_frame(frame.bytes(), EH_ADDR, frame.hdr(entries=[(0x1000, cie)]), HDR_ADDR)
    with pytest.raises(CfiError):
        table.row_for(0x1000)


def test_fde_with_bad_cie_pointer_is_an_error():
    frame = Frame()
    frame.cie(GCC_CIE)
    off = frame.fde(0, FUNC, 0x10)
    data = bytearray(frame.bytes())
    data[off + 4:off + 8] = struct.pack("<I", 0x1000)  # points before the section
    table = CfiTable.from_eh_frame(bytes(data), EH_ADDR, frame.hdr(), HDR_ADDR)
    with pytest.raises(CfiError):
        table.row_for(FUNC)


def test_scan_keeps_fdes_before_a_corrupt_entry():
    frame = Frame()
    cie = frame.cie(GCC_CIE)
    frame.fde(cie, 0x1000, 0x10, b"\x41\x0e\x10")
    data = frame.bytes(terminate=False) + struct.pack("<I", 0x7FFF_FFFF) + b"\x00" * 8
    table = CfiTable.from_eh_frame(data, EH_ADDR)
    assert len(table) == 1 and table.row_for(0x1001).cfa.offset == 16


def test_scan_leaves_out_an_fde_with_a_bad_cie_pointer():
    frame = Frame()
    cie = frame.cie(GCC_CIE)
    frame.fde(cie, 0x1000, 0x10)
    frame.fde(cie + 2, 0x2000, 0x10)  # points into the middle of the CIE
    frame.fde(cie, 0x3000, 0x10, b"\x41\x0e\x10")
    table = frame.table(with_hdr=False)
    assert len(table) == 2 and table.row_for(0x3001).cfa.offset == 16


def test_zero_terminator_in_the_middle_is_stepped_over():
    frame = Frame()
    cie = frame.cie(GCC_CIE)
    frame.fde(cie, 0x1000, 0x10)
    frame.buf += b"\0\0\0\0"
    frame.fde(cie, 0x2000, 0x10, b"\x41\x0e\x10")
    assert frame.table(with_hdr=False).row_for(0x2001).cfa.offset == 16


def test_rows_are_cached_per_pc():
    table = one_fde(b"\x41\x0e\x10")
    assert table.row_for(FUNC + 5) is table.row_for(FUNC + 5)
    assert table.row_for(0x10) is None and table.row_for(0x10) is None


# --- the DW_CFA interpreter: one test per opcode ----------------------------------------------

def at(insns: bytes, pc: int, **kw):
    return one_fde(insns, **kw).row_for(FUNC + pc)


def test_advance_loc_variants_and_stop_at_pc():
    insns = (b"\x41\x0e\x10"                        # advance_loc 1
             + b"\x02\x02\x0e\x18"                  # advance_loc1 2  -> 3
             + b"\x03\x04\x00\x0e\x20"              # advance_loc2 4  -> 7
             + b"\x04\x08\x00\x00\x00\x0e\x28"      # advance_loc4 8  -> 15
             + b"\x1d\x10\x00\x00\x00\x00\x00\x00\x00\x0e\x30")  # MIPS_advance_loc8 16 -> 31
    table = one_fde(insns)
    expected = {0: 8, 1: 16, 2: 16, 3: 24, 6: 24, 7: 32, 14: 32, 15: 40, 30: 40, 31: 48, 0xFF: 48}
    assert {pc: table.row_for(FUNC + pc).cfa.offset for pc in expected} == expected


def test_code_alignment_factor_scales_advances():
    table = one_fde(b"\x41\x0e\x10\x02\x03\x0e\x18", caf=4)
    assert [table.row_for(FUNC + pc).cfa.offset for pc in (3, 4, 15, 16)] == [8, 16, 16, 24]


def test_set_loc():
    insns = b"\x01" + enc_ptr(FUNC + 0x20, 0x1B, 0) + b"\x0e\x10"
    # set_loc's pcrel operand is relative to its own address; build it in place
    frame = Frame()
    cie = frame.cie(GCC_CIE)
    fde_off = len(frame.buf)
    operand_addr = EH_ADDR + fde_off + 8 + 8 + 1 + 1  # header, start/len, aug len, opcode
    insns = b"\x01" + enc_ptr(FUNC + 0x20, 0x1B, operand_addr) + b"\x0e\x10"
    frame.fde(cie, FUNC, 0x100, insns)
    table = frame.table()
    assert table.row_for(FUNC + 0x1F).cfa.offset == 8
    assert table.row_for(FUNC + 0x20).cfa.offset == 16


@pytest.mark.parametrize("insns, expected", [
    (b"\x83\x02", Rule(OFFSET, -16)),                    # offset
    (b"\x05\x03\x02", Rule(OFFSET, -16)),                # offset_extended
    (b"\x11\x03\x02", Rule(OFFSET, -16)),                # offset_extended_sf (2 * -8)
    (b"\x11\x03\x7e", Rule(OFFSET, 16)),                 # offset_extended_sf, negative operand
    (b"\x2f\x03\x02", Rule(OFFSET, 16)),                 # GNU_negative_offset_extended
    (b"\x14\x03\x02", Rule(VAL_OFFSET, -16)),            # val_offset
    (b"\x15\x03\x7f", Rule(VAL_OFFSET, 8)),              # val_offset_sf
    (b"\x07\x03", Rule(UNDEFINED)),                      # undefined
    (b"\x08\x03", Rule(SAME_VALUE)),                     # same_value
    (b"\x09\x03\x0c", Rule(REGISTER, R12)),              # register
    (b"\x10\x03\x02\x77\x10", Rule(EXPRESSION, b"\x77\x10")),      # expression
    (b"\x16\x03\x02\x77\x10", Rule(VAL_EXPRESSION, b"\x77\x10")),  # val_expression
])
def test_register_rule_ops(insns, expected):
    row = at(b"\x41" + insns, 1)
    assert rules(row)[RBX] == expected
    assert RBX not in rules(at(b"\x41" + insns, 0))


@pytest.mark.parametrize("insns, cfa", [
    (b"\x0c\x06\x10", CfaRule(RBP, 16)),           # def_cfa
    (b"\x0d\x06", CfaRule(RBP, 8)),                # def_cfa_register keeps the offset
    (b"\x0e\x90\x03", CfaRule(RSP, 400)),          # def_cfa_offset (not factored)
    (b"\x12\x06\x7e", CfaRule(RBP, 16)),           # def_cfa_sf: -2 * data_align(-8)
    (b"\x12\x06\x02", CfaRule(RBP, -16)),          # def_cfa_sf, positive operand
    (b"\x13\x7d", CfaRule(RSP, 24)),               # def_cfa_offset_sf: -3 * -8
    (b"\x0f\x02\x77\x08", CfaRule(-1, 0, b"\x77\x08")),  # def_cfa_expression
    (b"\x0f\x02\x77\x08\x0d\x06", CfaRule(RBP, 0)),      # register after an expression
])
def test_cfa_ops(insns, cfa):
    assert at(b"\x41" + insns, 1).cfa == cfa
    assert at(b"\x41" + insns, 0).cfa == CfaRule(RSP, 8)


def test_def_cfa_sf_uses_the_data_alignment_factor_not_the_code_one():
    assert at(b"\x12\x07\x7e", 0, caf=4, daf=-8).cfa == CfaRule(RSP, 16)
    assert at(b"\x13\x02", 0, caf=1, daf=4).cfa == CfaRule(RSP, 8)


def test_def_cfa_offset_after_expression_is_an_error():
    with pytest.raises(CfiError):
        at(b"\x0f\x02\x77\x08\x0e\x10", 0)


def test_restore_and_restore_extended_return_to_the_cie_rules():
    cie = GCC_CIE + b"\x83\x05"  # rbx at cfa-40 initially
    row = at(b"\x83\x02\x8c\x03\x41\xc3\x06\x0c", 1, cie_insns=cie)
    assert rules(row)[RBX] == Rule(OFFSET, -40)      # restore -> CIE's rule
    assert R12 not in rules(row)                     # restore_extended, no CIE rule -> none
    assert rules(at(b"\x83\x02\x41\xc3", 0, cie_insns=cie))[RBX] == Rule(OFFSET, -16)


def test_remember_restore_state_include_the_cfa():
    insns = (b"\x41\x0e\x10\x86\x02"        # 1: cfa rsp+16, rbp at cfa-16
             b"\x41\x0a\x0e\x08\xc6"        # 2: remember; cfa rsp+8; restore rbp
             b"\x41\x0b"                    # 3: back to cfa rsp+16, rbp saved
             b"\x41\x0a\x0a\x0e\x20\x41\x0b\x41\x0b")  # nested
    table = one_fde(insns)
    row2, row3 = table.row_for(FUNC + 2), table.row_for(FUNC + 3)
    assert row2.cfa == CfaRule(RSP, 8) and RBP not in rules(row2)
    assert row3.cfa == CfaRule(RSP, 16) and rules(row3)[RBP] == Rule(OFFSET, -16)
    assert [table.row_for(FUNC + pc).cfa.offset for pc in (4, 5, 6)] == [32, 16, 16]


def test_restore_state_underflow_and_deep_nesting_are_errors():
    with pytest.raises(CfiError):
        at(b"\x0b", 0)
    with pytest.raises(CfiError):
        at(b"\x0a" * 100, 0)


def test_args_size_nop_and_window_save():
    table = one_fde(b"\x41\x2e\x10\x00\x2d\x41\x2e\x00")
    assert [table.row_for(FUNC + pc).args_size for pc in (0, 1, 2)] == [0, 16, 0]


def test_unknown_opcode_and_truncated_operand_are_errors():
    with pytest.raises(CfiError, match="0x3f"):
        at(b"\x3f", 0)
    with pytest.raises(CfiError):
        at(b"\x0c\x07", 0)   # def_cfa missing its offset
    with pytest.raises(CfiError):
        at(b"\x10\x03\x7f\x77", 0)  # expression block longer than the data


def test_fde_without_a_cfa_rule_is_an_error():
    with pytest.raises(CfiError):
        at(b"", 0, cie_insns=b"\x90\x01")


def test_ops_after_pc_are_not_executed():
    assert at(b"\x41\x3f", 0).cfa == CfaRule(RSP, 8)  # the bad opcode lies beyond the pc


# --- step() -----------------------------------------------------------------------------------

STACK = 0x7FFF_0000


def stack_space(*words: int, base: int = STACK) -> FakeSpace:
    return FakeSpace({base: b"".join(struct.pack("<Q", w & MASK) for w in words)})


def reader(space):
    return lambda addr: read_u64(space, addr)


def test_step_plain_frame():
    row = at(b"\x41\x0e\x10\x86\x02", 1)  # push rbp
    space = stack_space(0x1111, 0x4242)  # [rsp] = saved rbp, [rsp+8] = return address
    regs = {RSP: STACK, RIP: FUNC + 1, RBP: 0x9999, RBX: 3, RAX: 7, RDI: 8, R12: 12}
    cfa, caller = step(row, regs, reader(space))
    assert cfa == STACK + 16
    assert caller == {RSP: STACK + 16, RIP: 0x4242, RBP: 0x1111, RBX: 3, R12: 12}


def test_step_each_rule_kind():
    insns = (b"\x0c\x06\x10"                   # cfa = rbp+16
             b"\x14\x03\x02"                   # rbx = cfa-16 (val_offset)
             b"\x09\x0c\x00"                   # r12 = rax
             b"\x08\x0d"                       # r13 same value
             b"\x07\x0e"                       # r14 undefined
             b"\x10\x0f\x02\x77\x00"           # r15 at [rsp]  (expression)
             b"\x16\x05\x03\x77\x08\x06"       # rdi = [rsp+8]   (val_expression: breg7 8; deref)
             b"\x10\x04\x02\x75\x00")          # rsi at [rdi]: rdi unknown -> rsi unknown
    row = at(insns, 0)
    space = stack_space(0xF15, 0xD1, 0xAAA, 0x4242)
    regs = {RSP: STACK, RBP: STACK + 16, RAX: 0xA, 13: 0xD, 14: 0xE, 15: 0xF}
    cfa, caller = step(row, regs, reader(space))
    assert cfa == STACK + 32
    assert caller == {RSP: cfa, RBX: cfa - 16, R12: 0xA, 13: 0xD, 15: 0xF15, RDI: 0xD1,
                      RBP: STACK + 16, RIP: 0x4242}


def test_step_undefined_return_address_means_outermost():
    row = at(b"\x07\x10", 0)
    cfa, caller = step(row, {RSP: STACK, RIP: FUNC}, reader(stack_space(1, 2)))
    assert RIP not in caller and caller[RSP] == cfa == STACK + 8


def test_step_rsp_rule_wins_over_cfa():
    row = at(b"\x15\x07\x7f", 0)  # rsp = cfa+8 via val_offset_sf(-1)
    _, caller = step(row, {RSP: STACK}, reader(stack_space(0, 0x77)))
    assert caller[RSP] == STACK + 16 and caller[RIP] == 0


def test_step_unknown_cfa_register():
    row = at(b"\x0c\x06\x10", 0)
    with pytest.raises(CfiError, match="cfa register rbp unknown"):
        step(row, {RSP: STACK}, reader(stack_space(0)))
    expr_row = at(b"\x0f\x02\x76\x00", 0)
    with pytest.raises(CfiError, match="rbp"):
        step(expr_row, {RSP: STACK}, reader(stack_space(0)))


def test_step_memory_fault_propagates():
    row = at(b"", 0)
    with pytest.raises(MemoryFault):
        step(row, {RSP: STACK + 0x1000}, reader(stack_space(0)))


def test_step_plt_cfa_expression():
    # glibc's PLT: cfa = rsp + 8 + ((rip & 15) >= 11) << 3
    expr = b"\x77\x08\x80\x00\x3f\x1a\x3b\x2a\x33\x24\x22"
    row = at(b"\x0f" + block(expr), 0)
    space = stack_space(0x5555, 0x6666, 0x7777)
    assert step(row, {RSP: STACK, RIP: 0x1006}, reader(space)) == (
        STACK + 8, {RSP: STACK + 8, RIP: 0x5555})
    assert step(row, {RSP: STACK, RIP: 0x100B}, reader(space)) == (
        STACK + 16, {RSP: STACK + 16, RIP: 0x6666})


# __restore_rt as glibc writes it: rt_sigframe starts at rsp; registers sit in
# uc_mcontext at these offsets (r8 .. rip), CFA = [rsp+160] (the saved rsp).
SIGCONTEXT = {8: 40, 9: 48, 10: 56, 11: 64, 12: 72, 13: 80, 14: 88, 15: 96, RDI: 104, 4: 112,
              RBP: 120, RBX: 128, 1: 136, RAX: 144, 2: 152, RSP: 160, RIP: 168}


def restore_rt_frame() -> CfiTable:
    insns = b"\x0f" + block(b"\x77" + U(160) + b"\x06")
    for reg, off in SIGCONTEXT.items():
        insns += b"\x10" + U(reg) + block(b"\x77" + S(off))
    frame = Frame()
    cie = frame.cie(b"", aug=b"zRS")
    frame.fde(cie, FUNC - 1, 10, insns)  # glibc starts the FDE one byte early
    return frame.table()


def test_step_signal_frame_restores_all_17_registers():
    row = restore_rt_frame().row_for(FUNC)
    assert row.signal_frame
    words = [0] * 22
    for reg, off in SIGCONTEXT.items():
        words[off // 8] = 0x1000 + reg
    words[160 // 8] = STACK + 0x400  # the interrupted rsp
    cfa, caller = step(row, {RSP: STACK, RIP: FUNC}, reader(stack_space(*words)))
    assert cfa == STACK + 0x400
    expected = {reg: 0x1000 + reg for reg in range(17)}
    expected[RSP] = STACK + 0x400
    assert caller == expected
    assert len(caller) == len(NAMES) == 17
