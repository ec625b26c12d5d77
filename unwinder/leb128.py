"""LEB128, the engine's one reader and writer: CFI, DWARF expressions and
.debug_info read it; run-time unwind info and the tests write it.

A reader takes (buf, pos) and returns (value, new_pos). Running off the end
of `buf` raises IndexError (each caller's boundary turns it into its own
error type); a value longer than MAX_BYTES raises LebError, so a hostile run
of 0x80 bytes costs at most MAX_BYTES steps and never builds a huge int.
"""
from __future__ import annotations

MAX_BYTES = 20  # 140 bits: more than any 64-bit value needs, padding included


class LebError(ValueError):
    """A LEB128 value longer than MAX_BYTES: garbage."""


def uleb(buf: bytes, pos: int) -> tuple[int, int]:
    byte = buf[pos]
    if byte < 0x80:  # the common one-byte case
        return byte, pos + 1
    value, _, pos = _bits(buf, pos)
    return value, pos


def sleb(buf: bytes, pos: int) -> tuple[int, int]:
    value, width, pos = _bits(buf, pos)
    return (value - (1 << width) if value >> (width - 1) & 1 else value), pos


def _bits(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(the value's bits, how many, new pos): the loop both readers share."""
    value, shift, end = 0, 0, pos + MAX_BYTES
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, shift, pos
        if pos >= end:
            raise LebError("LEB128 value too long")


def encode_uleb(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"unsigned LEB128 of {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        done = (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40)
        out.append(byte | (0 if done else 0x80))
        if done:
            return bytes(out)
