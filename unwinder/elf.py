"""A small, defensive ELF64 little-endian reader.

pyelftools costs ~44 ms to import and ~60 ms to walk libc's .dynsym; the
unwinder needs only headers, a few sections and the symbol table, which
struct reads in well under a millisecond. Every offset read from the file is
bounds-checked: a garbage ELF raises ElfError, nothing else.
"""
from __future__ import annotations

import json
import struct
from collections import namedtuple
from operator import itemgetter

PT_LOAD, PT_NOTE = 1, 4
SHT_NOBITS = 8
SHF_COMPRESSED = 0x800
ELFCOMPRESS_ZLIB, ELFCOMPRESS_ZSTD = 1, 2
NT_GNU_BUILD_ID = 3
NT_FDO_PACKAGING_METADATA = 0xCAFE1A7E
MAX_PACKAGE_NOTE = 4096
STT_FUNC, STT_GNU_IFUNC = 2, 10
STB_GLOBAL, STB_WEAK = 1, 2
MAX_SECTIONS = 4096
MAX_DECOMPRESSED = 256 << 20

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_CHDR = struct.Struct("<IIQQ")


class ElfError(ValueError):
    pass


# named tuples, not dataclasses: importing dataclasses (and inspect) costs
# more than the rest of the engine
Segment = namedtuple("Segment", "type flags offset vaddr filesz memsz")
Section = namedtuple("Section", "name type flags addr offset size link entsize")


class ElfFile:
    """Headers of one ELF image held in memory (bytes or an mmap)."""

    def __init__(self, data, name: str = "?"):
        self.name = name
        self.data = memoryview(data)
        if len(self.data) < _EHDR.size or bytes(self.data[:4]) != b"\x7fELF":
            raise ElfError(f"{name}: not an ELF file")
        ident = bytes(self.data[:16])
        if ident[4] != 2 or ident[5] != 1:
            raise ElfError(f"{name}: not a 64-bit little-endian ELF")
        (_, self.type, self.machine, _, self.entry, phoff, shoff, _, _,
         phentsize, phnum, shentsize, shnum, shstrndx) = _EHDR.unpack_from(self.data)
        self.by_index: list[Section] = []
        # symbols' link-time values (None: not defined) by name, as dynamic.common found them
        self.values_by_name: dict[str, int | None] = {}
        self.segments = self._read_segments(phoff, phentsize, phnum)
        self.sections = self._read_sections(shoff, shentsize, shnum, shstrndx)

    def _slice(self, offset: int, size: int) -> memoryview:
        if offset < 0 or size < 0 or offset + size > len(self.data):
            raise ElfError(f"{self.name}: range {offset:#x}+{size:#x} is outside the file")
        return self.data[offset:offset + size]

    def _read_segments(self, phoff, phentsize, phnum) -> list[Segment]:
        if phnum == 0:
            return []
        if phentsize != _PHDR.size:
            raise ElfError(f"{self.name}: odd program header size {phentsize}")
        table = self._slice(phoff, phnum * phentsize)
        return [Segment(t, f, o, v, fs, ms)
                for t, f, o, v, _, fs, ms, _ in _PHDR.iter_unpack(table)]

    def _read_sections(self, shoff, shentsize, shnum, shstrndx) -> dict[str, Section]:
        if shoff == 0 or shnum == 0:
            return {}
        if shentsize != _SHDR.size or shnum > MAX_SECTIONS or shstrndx >= shnum:
            raise ElfError(f"{self.name}: bad section header table")
        try:
            rows = list(_SHDR.iter_unpack(self._slice(shoff, shnum * shentsize)))
        except ElfError:
            return {}  # section headers are optional for running code (vdso copies, stripped cores)
        strtab = rows[shstrndx]
        names = bytes(self._slice(strtab[4], strtab[5])) if strtab[1] != SHT_NOBITS else b""
        sections: dict[str, Section] = {}
        for name_off, typ, flags, addr, off, size, link, _, _, entsize in rows:
            name = cstr(names, name_off)
            section = Section(name, typ, flags, addr, off, size, link, entsize)
            self.by_index.append(section)
            sections.setdefault(name, section)
        return sections

    def section_data(self, name: str) -> memoryview | None:
        section = self.sections.get(name)
        if section is None or section.type == SHT_NOBITS:
            return None
        return self.contents(section)

    def contents(self, section: Section) -> memoryview:
        raw = self._slice(section.offset, section.size)
        if not section.flags & SHF_COMPRESSED:
            return raw
        if len(raw) < _CHDR.size:
            raise ElfError(f"{self.name}: {section.name}: truncated compression header")
        kind, _, size, _ = _CHDR.unpack_from(raw)
        if kind not in (ELFCOMPRESS_ZLIB, ELFCOMPRESS_ZSTD) or size > MAX_DECOMPRESSED:
            raise ElfError(f"{self.name}: {section.name}: unsupported compression {kind}")
        if kind == ELFCOMPRESS_ZSTD:
            return _unzstd(raw[_CHDR.size:], size, f"{self.name}: {section.name}")
        import zlib  # only for a compressed section (DWARF, mostly: not on a walk's way)
        try:
            return memoryview(zlib.decompressobj().decompress(raw[_CHDR.size:], size))
        except zlib.error as e:
            raise ElfError(f"{self.name}: {section.name}: {e}") from None

    def content_size(self, section: Section) -> int:
        """The size of `contents(section)`, without decompressing it."""
        if not section.flags & SHF_COMPRESSED:
            return section.size
        raw = self._slice(section.offset, min(section.size, _CHDR.size))
        if len(raw) < _CHDR.size:
            raise ElfError(f"{self.name}: {section.name}: truncated compression header")
        return _CHDR.unpack_from(raw)[2]

    def build_id(self) -> str | None:
        for desc in self._notes(b"GNU\0", NT_GNU_BUILD_ID):
            return desc.hex()
        return None

    def _notes(self, owner: bytes, kind: int):
        sources = [(s.offset, s.filesz) for s in self.segments if s.type == PT_NOTE]
        sources += [(s.offset, s.size) for s in self.sections.values() if s.type == 7]
        for offset, size in sources:
            try:
                data = self._slice(offset, size)
            except ElfError:
                continue
            pos = 0
            while pos + 12 <= len(data):
                namesz, descsz, typ = struct.unpack_from("<III", data, pos)
                name_at = pos + 12
                desc_at = name_at + _align4(namesz)
                pos = desc_at + _align4(descsz)
                if pos > len(data):
                    break
                if typ == kind and bytes(data[name_at:name_at + namesz]) == owner:
                    yield bytes(data[desc_at:desc_at + descsz])

    def package(self) -> dict[str, str] | None:
        """The FDO package note (.note.package, as systemd-coredump reads it):
        {"type": "deb", "name": ..., "version": ..., ...}, strings only."""
        for desc in self._notes(b"FDO\0", NT_FDO_PACKAGING_METADATA):
            try:
                value = json.loads(desc[:MAX_PACKAGE_NOTE].split(b"\0", 1)[0])
            except ValueError:
                return None
            if isinstance(value, dict):
                return {k: v for k, v in value.items()
                        if isinstance(k, str) and isinstance(v, str)} or None
        return None

    def debuglink(self) -> str | None:
        data = self.section_data(".gnu_debuglink")
        if data is None:
            return None
        name = cstr(data, 0)
        return name or None

    def first_load(self, offset: int) -> Segment | None:
        """The PT_LOAD whose file range holds `offset` (else the first one)."""
        loads = [s for s in self.segments if s.type == PT_LOAD]
        for seg in loads:
            if seg.offset <= offset < seg.offset + max(seg.filesz, 1):
                return seg
        return loads[0] if loads else None

    def function_table(self, table: str) -> tuple[list[tuple], bytes]:
        """Defined functions of a symbol table (.symtab or .dynsym) as sorted
        (addr, table index, size, binding, name offset, room) rows, where room
        bounds an unsized symbol: the bytes left in its section and the string table; names
        are decoded only for the symbols actually looked up."""
        section = self.sections.get(table)
        if section is None or section.type == SHT_NOBITS or section.link >= len(self.by_index):
            return [], b""
        names = bytes(self.contents(self.by_index[section.link]))
        data = self.contents(section)
        data = data[:len(data) - len(data) % _SYM.size]
        end = self._section_end
        rows = [(value, index, size, info >> 4, name_off, 0 if size else end(shndx, value))
                for index, (name_off, info, _, shndx, value, size)
                in enumerate(_SYM.iter_unpack(data))
                if shndx and (info & 0xF) in (STT_FUNC, STT_GNU_IFUNC)]
        # by address, then table index (the order rows are made in: a stable sort keeps it),
        # with int keys: comparing the tuples took twice as long
        rows.sort(key=itemgetter(0))
        return rows, names


    def _section_end(self, shndx: int, value: int) -> int:
        """Bytes from `value` to the end of section `shndx` (0 if unknown)."""
        if shndx >= len(self.by_index):
            return 0
        section = self.by_index[shndx]
        return max(section.addr + section.size - value, 0)


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _unzstd(data, size: int, what: str) -> memoryview:
    """A zstd-compressed section (gcc -gz=zstd, objcopy --compress-debug-sections=zstd),
    at most `size` bytes out whatever the frame claims."""
    import zstandard  # only for such a section
    try:
        out = bytearray()
        with zstandard.ZstdDecompressor().stream_reader(bytes(data)) as reader:
            while len(out) < size and (chunk := reader.read(size - len(out))):
                out += chunk
        return memoryview(out)
    except zstandard.ZstdError as e:
        raise ElfError(f"{what}: {e}") from None


def cstr(data, offset: int) -> str:
    if not isinstance(data, bytes):
        data = bytes(data)
    if offset >= len(data):
        return ""
    end = data.find(b"\0", offset)
    return data[offset:end if end >= 0 else len(data)].decode("utf-8", "replace")
