"""Damaged copies of real cores and ELF files, for the hostile-input tests
(tests/e2e/test_hostile.py) and the long campaign (scripts/fuzz): bits
flipped, cut short, sizes made huge, the core's file list (NT_FILE)
pointed elsewhere, DWARF and section headers of an executable broken."""
from __future__ import annotations

import random
import struct

PAGE = 4096
PT_LOAD, PT_NOTE = 1, 4
NT_FILE = 0x46494C45
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")


def program_headers(data: bytes) -> list[tuple[int, tuple]]:
    """(file offset of the header, its fields) for each program header."""
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    return [(phoff + i * 56, _PHDR.unpack_from(data, phoff + i * 56)) for i in range(phnum)]


def _notes(blob: bytes) -> list[tuple[bytes, int, bytes]]:
    out, pos = [], 0
    while pos + 12 <= len(blob):
        namesz, descsz, kind = struct.unpack_from("<III", blob, pos)
        name_at = pos + 12
        desc_at = name_at + (namesz + 3 & ~3)
        out.append((blob[name_at:name_at + namesz], kind, blob[desc_at:desc_at + descsz]))
        pos = desc_at + (descsz + 3 & ~3)
    return out


def _pack(notes) -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return b"".join(struct.pack("<III", len(n), len(d), k) + pad(n) + pad(d)
                    for n, k, d in notes)


def file_paths(core: bytes) -> list[str]:
    """The paths of the core's NT_FILE note, one per mapping."""
    for _, (kind, _, offset, _, _, filesz, _, _) in program_headers(core):
        if kind == PT_NOTE:
            for _name, note, desc in _notes(core[offset:offset + filesz]):
                if note == NT_FILE:
                    count, _page = struct.unpack_from("<QQ", desc)
                    return [p.decode("utf-8", "surrogateescape")
                            for p in desc[16 + 24 * count:].split(b"\0")[:count]]
    return []


def with_file_paths(core: bytes, rename) -> bytes:
    """The core with each NT_FILE path p replaced by rename(p); the note
    segment grows or shrinks and what follows it moves by whole pages."""
    headers = program_headers(core)
    at, (_, flags, offset, vaddr, paddr, filesz, memsz, align) = next(
        (a, h) for a, h in headers if h[0] == PT_NOTE)
    notes = _notes(core[offset:offset + filesz])
    for i, (name, kind, desc) in enumerate(notes):
        if kind == NT_FILE:
            count, page = struct.unpack_from("<QQ", desc)
            table = desc[:16 + 24 * count]
            paths = desc[16 + 24 * count:].split(b"\0")[:count]
            renamed = [rename(p.decode("utf-8", "surrogateescape")).encode(
                "utf-8", "surrogateescape") for p in paths]
            notes[i] = (name, kind, table + b"".join(p + b"\0" for p in renamed))
    blob = _pack(notes)
    end = offset + filesz
    room = (end + PAGE - 1) // PAGE * PAGE - offset  # the notes' own pages
    delta = max(0, (len(blob) - room + PAGE - 1) // PAGE * PAGE)
    out = bytearray(core[:offset]) + blob + b"\0" * (room + delta - len(blob))
    out += core[offset + room:]
    _PHDR.pack_into(out, at, PT_NOTE, flags, offset, vaddr, paddr, len(blob), memsz, align)
    for a, h in headers:
        if h[0] != PT_NOTE and h[2] >= offset + room:
            _PHDR.pack_into(out, a, h[0], h[1], h[2] + delta, *h[3:])
    return bytes(out)


# ------------------------------------------------------------- blind damage

HUGE = (2**63, 2**64 - 1, 2**40, 2**32 - 1, 1 << 30)


def flip_bits(data: bytes, rng: random.Random, count: int, start: int = 0,
              end: int | None = None) -> bytes:
    out = bytearray(data)
    end = len(data) if end is None else end
    for _ in range(count):
        i = rng.randrange(start, end)
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def huge_core_field(core: bytes, rng: random.Random) -> bytes:
    """One program header field, the NT_FILE count or page size, or one
    note's size replaced by a huge value."""
    out = bytearray(core)
    headers = program_headers(core)
    choice = rng.randrange(3)
    if choice == 0:
        at, _ = rng.choice(headers)
        field = rng.choice((8, 16, 32, 40))  # offset, vaddr, filesz, memsz
        struct.pack_into("<Q", out, at + field, rng.choice(HUGE))
        return bytes(out)
    _, (_, _, offset, _, _, filesz, _, _) = next((a, h) for a, h in headers if h[0] == PT_NOTE)
    pos = offset
    spots = []
    while pos + 12 <= offset + filesz:
        namesz, descsz, kind = struct.unpack_from("<III", core, pos)
        desc_at = pos + 12 + (namesz + 3 & ~3)
        spots.append((pos, kind, desc_at))
        pos = desc_at + (descsz + 3 & ~3)
    pos, kind, desc_at = rng.choice(spots)
    if choice == 1 and kind == NT_FILE:
        struct.pack_into("<Q", out, desc_at + rng.choice((0, 8)), rng.choice(HUGE))
    else:
        struct.pack_into("<I", out, pos + rng.choice((0, 4)), rng.choice(HUGE) & 0xFFFFFFFF)
    return bytes(out)


def mutate_core(core: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random kind of damage: (what was done, the damaged core)."""
    notes_end = max(h[2] + h[5] for _, h in program_headers(core) if h[0] == PT_NOTE)
    kind = rng.choice(("flip-headers", "flip-anywhere", "truncate", "huge"))
    if kind == "flip-headers":  # ELF header, program headers and notes
        return kind, flip_bits(core, rng, rng.randint(1, 32), 0, notes_end)
    if kind == "flip-anywhere":
        return kind, flip_bits(core, rng, rng.randint(1, 256))
    if kind == "truncate":
        cut = rng.choice((rng.randrange(notes_end), rng.randrange(len(core))))
        return f"truncate at {cut}", core[:cut]
    return kind, huge_core_field(core, rng)


# ------------------------------------------------------------- ELF damage

def section_headers(data: bytes) -> dict[str, int]:
    """Section name -> file offset of its header."""
    shoff, = struct.unpack_from("<Q", data, 40)
    shnum, shstrndx = struct.unpack_from("<HH", data, 60)
    strtab = _SHDR.unpack_from(data, shoff + shstrndx * _SHDR.size)
    out = {}
    for i in range(shnum):
        at = shoff + i * _SHDR.size
        name_at = strtab[4] + _SHDR.unpack_from(data, at)[0]
        out[data[name_at:data.index(b"\0", name_at)].decode()] = at
    return out


ELF_DAMAGE = ("debug_info at 0", "debug sections scrambled", "section headers scrambled",
              "section sizes huge", "string table index out of range", "eh_frame_hdr scrambled")


def damage_elf(data: bytes, how: str, rng: random.Random) -> bytes:
    """An executable that still runs (nothing the loader reads is touched,
    but for .eh_frame_hdr, read only to unwind) and whose DWARF, section
    headers or unwind index are broken `how` (one of ELF_DAMAGE)."""
    out = bytearray(data)
    headers = section_headers(data)
    debug = [n for n in headers if n.startswith(".debug_")]
    if how == "debug_info at 0":
        struct.pack_into("<Q", out, headers[".debug_info"] + 24, 0)
    elif how == "debug sections scrambled":
        for name in debug:
            offset, size = struct.unpack_from("<QQ", data, headers[name] + 24)
            for _ in range(max(1, size // 64)):
                out[offset + rng.randrange(size)] = rng.randrange(256)
    elif how == "section headers scrambled":
        shoff, = struct.unpack_from("<Q", data, 40)
        shnum, = struct.unpack_from("<H", data, 60)
        for _ in range(64):
            out[shoff + rng.randrange(shnum * _SHDR.size)] = rng.randrange(256)
    elif how == "section sizes huge":
        for name in rng.sample(sorted(headers), min(8, len(headers))):
            struct.pack_into("<Q", out, headers[name] + 32, rng.choice(HUGE))
    elif how == "string table index out of range":
        struct.pack_into("<H", out, 62, 0xFFF0)
    elif how == "eh_frame_hdr scrambled":
        offset, size = struct.unpack_from("<QQ", data, headers[".eh_frame_hdr"] + 24)
        out[offset:offset + size] = bytes(rng.randrange(256) for _ in range(size))
    else:
        raise ValueError(how)
    return bytes(out)
