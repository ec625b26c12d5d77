"""The rows of a DWARF line program (DWARF 2-5, .debug_line 6.2), decoded
from the section's bytes.

pyelftools decodes each opcode through construct and copies its whole state
per row (~60 us a row: 2.7 s for the few units a Rust program's stack
touches, its std's tables being large); only address, file, line and column
matter for a lookup, and this loop keeps only those (~1 us a row). The
header (file and directory tables) is dwarf.LineHeader.
"""
from __future__ import annotations

from ..leb128 import sleb, uleb

_END_SEQUENCE, _SET_ADDRESS = 1, 2
(_COPY, _ADVANCE_PC, _ADVANCE_LINE, _SET_FILE, _SET_COLUMN, _CONST_ADD_PC,
 _FIXED_ADVANCE_PC) = 1, 2, 3, 4, 5, 8, 9


def decode(data: bytes, start: int, end: int, header) -> list[tuple[int, tuple | None]]:
    """(address, (file, line, column)) per row, in program order; None for a
    row that ends a sequence. `header`: the program's header (dwarf.LineHeader).
    Raises IndexError on a truncated program (LebError on a bad LEB128)."""
    min_len = header["minimum_instruction_length"]
    line_base, line_range = header["line_base"], header["line_range"]
    opcode_base = header["opcode_base"]
    lengths = list(header["standard_opcode_lengths"])  # arguments of opcodes 1..base-1
    if line_range == 0:
        raise IndexError("line_range 0")
    const_add = (255 - opcode_base) // line_range * min_len
    end = min(end, len(data))
    out: list[tuple[int, tuple | None]] = []
    add = out.append
    address, file, line, column = 0, 1, 1, 0
    pos = start
    while pos < end:
        op = data[pos]
        pos += 1
        if op >= opcode_base:  # special: advance address and line, add a row
            adjusted = op - opcode_base
            address += adjusted // line_range * min_len
            line += line_base + adjusted % line_range
            add((address, (file, line, column)))
        elif op == _SET_COLUMN:  # the usual operands are one byte: read inline
            column = data[pos]
            pos += 1
            if column >= 0x80:
                column, pos = uleb(data, pos - 1)
        elif op == _ADVANCE_LINE:
            delta = data[pos]
            pos += 1
            if delta >= 0x80:
                delta, pos = sleb(data, pos - 1)
            elif delta >= 0x40:  # a negative one-byte value
                delta -= 0x80
            line += delta
        elif op == 0:  # extended: a length, then the opcode and its operands
            size, pos = uleb(data, pos)
            if size == 0:
                continue
            next_pos = pos + size
            ex = data[pos]
            if ex == _END_SEQUENCE:
                add((address, None))
                address, file, line, column = 0, 1, 1, 0
            elif ex == _SET_ADDRESS:
                address = int.from_bytes(data[pos + 1:next_pos], "little")
            pos = next_pos  # define_file, set_discriminator, vendor ones: skipped
        elif op == _COPY:
            add((address, (file, line, column)))
        elif op == _ADVANCE_PC:
            advance, pos = uleb(data, pos)
            address += advance * min_len
        elif op == _SET_FILE:
            file, pos = uleb(data, pos)
        elif op == _CONST_ADD_PC:
            address += const_add
        elif op == _FIXED_ADVANCE_PC:
            address += int.from_bytes(data[pos:pos + 2], "little")
            pos += 2
        else:  # negate_stmt, basic_block, prologue/epilogue, isa, unknown: skip operands
            for _ in range(lengths[op - 1] if op - 1 < len(lengths) else 0):
                _, pos = uleb(data, pos)
    return out
