"""DW_EH_PE pointer decoding over a bytes buffer, and LEB128 as CFI reads it.

Every reader takes (buf, pos) and returns (value, new_pos). Running off the
end of `buf` raises struct.error/IndexError; the table layer turns those into
CfiError, so the hot paths here carry no bounds checks of their own. A LEB128
value too long (unwinder.leb128's LebError) becomes a CfiError here.
"""
from __future__ import annotations

import struct

from .. import leb128
from ..leb128 import LebError

MASK64 = 0xFFFF_FFFF_FFFF_FFFF

# DW_EH_PE value formats (low nibble) and applications (bits 4-6).
PE_ABSPTR, PE_ULEB128, PE_UDATA2, PE_UDATA4, PE_UDATA8 = 0x00, 0x01, 0x02, 0x03, 0x04
PE_SLEB128, PE_SDATA2, PE_SDATA4, PE_SDATA8 = 0x09, 0x0A, 0x0B, 0x0C
PE_PCREL, PE_TEXTREL, PE_DATAREL, PE_FUNCREL, PE_ALIGNED = 0x10, 0x20, 0x30, 0x40, 0x50
PE_INDIRECT = 0x80
PE_OMIT = 0xFF

_FIXED = {
    PE_UDATA2: struct.Struct("<H"), PE_UDATA4: struct.Struct("<I"), PE_UDATA8: struct.Struct("<Q"),
    PE_SDATA2: struct.Struct("<h"), PE_SDATA4: struct.Struct("<i"), PE_SDATA8: struct.Struct("<q"),
}
_ADDR = {4: _FIXED[PE_UDATA4], 8: _FIXED[PE_UDATA8]}


class CfiError(ValueError):
    """Call frame information that cannot be decoded or applied."""


def uleb(buf: bytes, pos: int) -> tuple[int, int]:
    try:
        return leb128.uleb(buf, pos)
    except LebError as e:
        raise CfiError(str(e)) from None


def sleb(buf: bytes, pos: int) -> tuple[int, int]:
    try:
        return leb128.sleb(buf, pos)
    except LebError as e:
        raise CfiError(str(e)) from None


class PointerBases:
    """Link-time bases for DW_EH_PE applications; `section_addr` is the address of buf[0]."""
    __slots__ = ("section_addr", "text", "data", "address_size")

    def __init__(self, section_addr: int = 0, text: int = 0, data: int = 0, address_size: int = 8):
        if address_size not in _ADDR:
            raise CfiError(f"unsupported address size {address_size}")
        self.section_addr = section_addr
        self.text = text
        self.data = data
        self.address_size = address_size


def read_pointer(buf: bytes, pos: int, enc: int, bases: PointerBases,
                 func: int = 0) -> tuple[int, int]:
    """Decode one DW_EH_PE-encoded value; the indirect flag is left to the caller."""
    fmt = enc & 0x0F
    app = enc & 0x70
    field = pos
    if app == PE_ALIGNED:
        size = bases.address_size
        pos += -(bases.section_addr + pos) % size
        field = pos
        fmt = PE_ABSPTR
    if fmt == PE_ABSPTR:
        value = _ADDR[bases.address_size].unpack_from(buf, pos)[0]
        pos += bases.address_size
    elif fmt == PE_ULEB128:
        value, pos = uleb(buf, pos)
    elif fmt == PE_SLEB128:
        value, pos = sleb(buf, pos)
    else:
        st = _FIXED.get(fmt)
        if st is None:
            raise CfiError(f"bad pointer encoding {enc:#x}")
        value = st.unpack_from(buf, pos)[0]
        pos += st.size
    if app == PE_PCREL:
        value += bases.section_addr + field
    elif app == PE_TEXTREL:
        value += bases.text
    elif app == PE_DATAREL:
        value += bases.data
    elif app == PE_FUNCREL:
        value += func
    elif app not in (0, PE_ALIGNED):
        raise CfiError(f"bad pointer encoding {enc:#x}")
    return value & MASK64, pos

