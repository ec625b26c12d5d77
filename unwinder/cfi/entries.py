"""CIE and FDE headers of .eh_frame and .debug_frame."""
from __future__ import annotations

import struct
from collections.abc import Callable

from .encoding import (MASK64, PE_INDIRECT, PE_OMIT, PE_UDATA4, PE_UDATA8, CfiError,
                       PointerBases, read_pointer, sleb, uleb)

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_DEBUG_CIE_ID = {4: 0xFFFF_FFFF, 8: MASK64}


class Cie:
    __slots__ = ("offset", "code_align", "data_align", "ra_reg", "fde_enc", "has_aug_data",
                 "signal_frame", "segment_size", "insn_start", "insn_end", "initial")

    def __init__(self, offset: int, code_align: int, data_align: int, ra_reg: int, fde_enc: int,
                 has_aug_data: bool, signal_frame: bool, segment_size: int, insn_start: int,
                 insn_end: int, initial: object = None):
        self.offset = offset
        self.code_align = code_align
        self.data_align = data_align
        self.ra_reg = ra_reg
        self.fde_enc = fde_enc
        self.has_aug_data = has_aug_data    # 'z': every FDE carries an augmentation-data length
        self.signal_frame = signal_frame    # 'S'
        self.segment_size = segment_size
        self.insn_start = insn_start
        self.insn_end = insn_end
        self.initial = initial  # the initial State, filled in by program.initial_state


class Fde:
    __slots__ = ("offset", "cie", "start", "end", "insn_start", "insn_end")

    def __init__(self, offset: int, cie: Cie, start: int, end: int, insn_start: int,
                 insn_end: int):
        self.offset = offset
        self.cie = cie
        self.start = start
        self.end = end
        self.insn_start = insn_start
        self.insn_end = insn_end


def read_header(buf: bytes, off: int) -> tuple[int, int, int, int] | None:
    """(id_pos, id, end, offset_size) of the entry at `off`, or None for a zero terminator."""
    length = _U32.unpack_from(buf, off)[0]
    pos, size = off + 4, 4
    if length == 0:
        return None
    if length == 0xFFFF_FFFF:
        length = _U64.unpack_from(buf, pos)[0]
        pos, size = pos + 8, 8
    elif length >= 0xFFFF_FFF0:
        raise CfiError(f"reserved entry length {length:#x} at {off:#x}")
    end = pos + length
    if end > len(buf) or length < size:
        raise CfiError(f"entry at {off:#x} runs past the section end")
    ident = (_U64 if size == 8 else _U32).unpack_from(buf, pos)[0]
    return pos, ident, end, size


def is_cie(ident: int, size: int, is_eh: bool) -> bool:
    return ident == 0 if is_eh else ident == _DEBUG_CIE_ID[size]


def parse_cie(buf: bytes, off: int, is_eh: bool, bases: PointerBases) -> Cie:
    header = read_header(buf, off)
    if header is None or not is_cie(header[1], header[3], is_eh):
        raise CfiError(f"no CIE at {off:#x}")
    id_pos, _, end, size = header
    pos = id_pos + size
    version = buf[pos]
    if version not in (1, 3, 4):
        raise CfiError(f"CIE version {version} at {off:#x}")
    nul = buf.find(b"\0", pos + 1, end)
    if nul < 0:
        raise CfiError(f"unterminated augmentation in CIE at {off:#x}")
    aug = buf[pos + 1:nul]
    pos = nul + 1
    address_size, segment_size = bases.address_size, 0
    if version == 4:
        address_size, segment_size = buf[pos], buf[pos + 1]
        pos += 2
        if address_size not in (4, 8):
            raise CfiError(f"CIE address size {address_size} at {off:#x}")
    if aug.startswith(b"eh"):  # old gcc: the address of an exception table
        pos += address_size
    code_align, pos = uleb(buf, pos)
    data_align, pos = sleb(buf, pos)
    if version == 1:
        ra_reg = buf[pos]
        pos += 1
    else:
        ra_reg, pos = uleb(buf, pos)
    # .debug_frame addresses are plain target addresses of the CIE's size.
    fde_enc = PE_UDATA8 if address_size == 8 else PE_UDATA4
    signal_frame = False
    has_aug_data = aug.startswith(b"z")
    if has_aug_data:
        length, pos = uleb(buf, pos)
        data_end = pos + length
        for ch in aug[1:]:
            if ch == 0x52:    # 'R'
                fde_enc = buf[pos]
                pos += 1
            elif ch == 0x50:  # 'P': personality routine, only skipped (never dereferenced)
                enc = buf[pos]
                pos += 1
                if enc != PE_OMIT:
                    pos = read_pointer(buf, pos, enc & 0x7F, bases)[1]
            elif ch == 0x4C:  # 'L': the LSDA itself lives in FDE augmentation data
                pos += 1
            elif ch == 0x53:  # 'S'
                signal_frame = True
            elif ch not in (0x42, 0x47):  # 'B', 'G' carry no data; stop at anything unknown
                break
        pos = data_end
    elif aug not in (b"", b"eh"):
        raise CfiError(f"unknown CIE augmentation {aug!r} at {off:#x}")
    if pos > end:
        raise CfiError(f"CIE at {off:#x} runs past its end")
    return Cie(off, code_align, data_align, ra_reg, fde_enc, has_aug_data,
               signal_frame, segment_size, pos, end)


def parse_fde(buf: bytes, off: int, is_eh: bool, bases: PointerBases,
              get_cie: Callable[[int], Cie]) -> Fde:
    header = read_header(buf, off)
    if header is None or is_cie(header[1], header[3], is_eh):
        raise CfiError(f"no FDE at {off:#x}")
    id_pos, ident, end, size = header
    cie_off = id_pos - ident if is_eh else ident
    if not 0 <= cie_off < len(buf) or cie_off == off:
        raise CfiError(f"FDE at {off:#x} points to a bad CIE offset {cie_off:#x}")
    cie = get_cie(cie_off)
    if cie.fde_enc & PE_INDIRECT or cie.fde_enc == PE_OMIT:
        raise CfiError(f"FDE address encoding {cie.fde_enc:#x} at {off:#x}")
    pos = id_pos + size + cie.segment_size
    start, pos = read_pointer(buf, pos, cie.fde_enc, bases)
    length, pos = read_pointer(buf, pos, cie.fde_enc & 0x0F, bases)
    if cie.has_aug_data:
        skip, pos = uleb(buf, pos)
        pos += skip
    if pos > end:
        raise CfiError(f"FDE at {off:#x} runs past its end")
    return Fde(off, cie, start, start + length, pos, end)
