"""Source line of a code offset, from a code object's line table bytes:
the three formats CPython has used (3.8-3.9 co_lnotab, 3.10 co_linetable,
3.11+ the location table of Objects/locations.md). Each returns None where
the table says "no line", and reads only the bytes given (bounded)."""
from __future__ import annotations


def lnotab_line(table: bytes, firstlineno: int, lasti: int) -> int:
    """3.8-3.9: (address increment, signed line increment) byte pairs;
    `lasti` in bytes. The line of the last pair whose address is <= lasti."""
    line, addr = firstlineno, 0
    for i in range(0, len(table) - 1, 2):
        addr += table[i]
        if addr > lasti:
            break
        line += table[i + 1] - 256 if table[i + 1] > 127 else table[i + 1]
    return line


def linetable310_line(table: bytes, firstlineno: int, lasti: int) -> int | None:
    """3.10: (byte length, signed line delta) pairs, each a range of code
    that starts where the previous one ended; delta -128: no line."""
    if lasti < 0:
        return firstlineno
    line, end, current = firstlineno, 0, None
    for i in range(0, len(table) - 1, 2):
        start, end = end, end + table[i]
        delta = table[i + 1] - 256 if table[i + 1] > 127 else table[i + 1]
        if delta == -128:
            current = None
        else:
            line += delta
            current = line
        if start <= lasti < end:
            return current
    return None


def locations_line(table: bytes, firstlineno: int, lasti: int) -> int | None:
    """3.11+: entries of `length` code units; the first byte is
    1CCCCLLL (C: the form, L: length - 1); `lasti` in code units."""
    line, addr, i, n = firstlineno, 0, 0, len(table)
    while i < n:
        first = table[i]
        i += 1
        form, length = (first >> 3) & 15, (first & 7) + 1
        here: int | None = line
        if form == 15:                       # no location
            here = None
        elif form == 14:                     # long: line, end line, columns
            delta, i = _svarint(table, i)
            line += delta
            here = line
            for _ in range(3):
                _, i = _varint(table, i)
        elif form == 13:                     # line only
            delta, i = _svarint(table, i)
            line += delta
            here = line
        elif form >= 10:                     # one line: delta form-10, two column bytes
            line += form - 10
            here = line
            i += 2
        else:                                # short: same line, one column byte
            i += 1
        if addr <= lasti < addr + length:
            return here
        addr += length
    return None


def _varint(table: bytes, i: int) -> tuple[int, int]:
    """6-bit chunks, least significant first; bit 6 says another follows."""
    value = shift = 0
    while i < len(table) and shift < 64:
        b = table[i]
        i += 1
        value |= (b & 63) << shift
        shift += 6
        if not b & 64:
            break
    return value, i


def _svarint(table: bytes, i: int) -> tuple[int, int]:
    value, i = _varint(table, i)
    return (-(value >> 1) if value & 1 else value >> 1), i
