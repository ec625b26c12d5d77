"""ELF images by mapping: which file backs a pc, its build-id, load bias,
unwind tables, symbols and line tables.

Names for the three kinds of address: a *runtime* address is what the
target's registers hold; a *link* address is what the ELF file says
(sh_addr, st_value, FDE ranges); runtime = link + load bias.
"""
from __future__ import annotations

import bisect
import errno
import mmap
import os

from .cfi import CfiError, CfiTable, Row
from .debuginfo import is_build_id, local_debug_file, minidebuginfo
from .elf import ElfError, ElfFile
from .files import open_regular
from .space import AddressSpace, Mapping, MapIndex, MemoryFault
from .symbols.symtab import SymbolTable

MAX_IN_MEMORY_IMAGE = 64 << 20  # a [vdso] or JIT object read from target memory
MAX_CACHED_PCS = 1 << 16


class Image:
    """One ELF file's contents and the tables decoded from it, shared by every
    mapping of the same file (keyed by file identity in ImageCache)."""
    method = "cfi"  # how the walk names frames its rows give (run-time images differ)

    def __init__(self, elf: ElfFile, path: str, cache: ImageCache | None = None):
        self.elf = elf
        self.path = path
        self.build_id = elf.build_id()
        self._cache = cache  # where separate debug files are looked for, None: nowhere
        self._fetched = False
        self._eh: CfiTable | None | bool = False  # False: not built yet
        self._debug: CfiTable | None | bool = False
        self._debug_file: ElfFile | None | bool = False
        self._symbols: SymbolTable | None = None
        self._lines = False  # False: not built yet; then DwarfLines or None
        self.errors: list[str] = []

    def row_for(self, link_pc: int) -> Row | None:
        """The CFI row at a link-time lookup address: .eh_frame first, then
        .debug_frame from the file itself or its separate debug file."""
        if self._eh is False:
            self._eh = self._build(self._eh_frame_table, ".eh_frame")
        row = self._lookup(self._eh, link_pc)
        if row is None:
            if self._debug is False:
                self._debug = self._build(self._debug_frame_table, ".debug_frame")
            row = self._lookup(self._debug, link_pc)
        return row

    def _lookup(self, table, link_pc):
        if not table:
            return None
        try:
            return table.row_for(link_pc)
        except CfiError as e:
            self.errors.append(f"{self.path}: CFI at {link_pc:#x}: {e}")
            return None

    def _build(self, make, what):
        try:
            return make()
        except (CfiError, ElfError) as e:
            self.errors.append(f"{self.path}: {what}: {e}")
            return None

    def _eh_frame_table(self) -> CfiTable | None:
        sections = self.elf.sections
        eh = sections.get(".eh_frame")
        if eh is None:
            return None
        hdr = sections.get(".eh_frame_hdr")
        got = sections.get(".got.plt") or sections.get(".got")
        text = sections.get(".text")
        return CfiTable.from_eh_frame(
            self.elf.contents(eh), eh.addr,
            self.elf.contents(hdr) if hdr else None, hdr.addr if hdr else None,
            text_addr=text.addr if text else 0, data_addr=got.addr if got else 0)

    def _debug_frame_table(self) -> CfiTable | None:
        for elf in (self.elf, self._debug_elf()):
            if elf is not None:
                data = elf.section_data(".debug_frame")
                if data is not None:
                    return CfiTable.from_debug_frame(data)
        return None

    def _debug_elf(self) -> ElfFile | None:
        # a miss found before fetching was allowed (while a target was held) is asked again
        fetch = self._cache.fetch_debug if self._cache else None
        if self._debug_file is False or (self._debug_file is None and fetch and not self._fetched):
            if self._debug_file is None:
                self._symbols = None  # made without the debug file's .symtab: made again
            self._fetched = fetch is not None
            path = debug_file_for(self, self.path, fetch) if self._cache else None
            elf = load_elf(path) if path else None
            if elf is not None and self.build_id and elf.build_id() not in (None, self.build_id):
                self.errors.append(f"{self.path}: debug file {path} is for another build")
                elf = None
            self._debug_file = elf
        return self._debug_file

    @property
    def lines(self):
        """DwarfLines from the file itself or its debug file, or None
        (the DWARF reader is imported only here, when some module has DWARF)."""
        if self._lines is False:
            self._lines = None
            for elf in (self.elf, self._debug_elf()):
                if elf is not None and ".debug_info" in elf.sections:
                    from .symbols.lines import DwarfLines
                    try:
                        self._lines = DwarfLines(elf)
                    except (ElfError, ValueError) as e:
                        self.errors.append(f"{self.path}: DWARF: {e}")
                    break
        return self._lines

    @property
    def symbols(self) -> SymbolTable:
        """.symtab, else the separate debug file's .symtab (as gdb and
        eu-stack use it), else MiniDebugInfo's, else .dynsym."""
        if self._symbols is None:
            self._symbols = SymbolTable([], b"")
            # each source is opened only if the ones before it have no functions
            for open_elf, table in ((lambda: self.elf, ".symtab"), (self._debug_elf, ".symtab"),
                                    (lambda: minidebuginfo(self.elf), ".symtab"),
                                    (lambda: self.elf, ".dynsym")):
                try:
                    elf = open_elf()
                    rows, names = elf.function_table(table) if elf else ([], b"")
                except ElfError as e:
                    self.errors.append(f"{self.path}: {table}: {e}")
                    continue
                if rows:
                    self._symbols = SymbolTable(rows, names)
                    break
        return self._symbols


def load_elf(path: str) -> ElfFile | None:
    try:
        with open(open_regular(path), "rb") as f:
            data = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        return ElfFile(data, path)
    except (OSError, ValueError):
        return None


def debug_file_for(image: Image, real_path: str, fetch=None) -> str | None:
    """Separate debug info: local files (debuginfo.local_debug_file), then
    `fetch(build_id) -> path | None` (the collector's debuginfod client)."""
    found = local_debug_file(image.build_id, real_path, image.elf.debuglink())
    if found is None and fetch is not None and is_build_id(image.build_id):
        found = fetch(image.build_id)
    return found


class ImageCache:
    """Images keyed by file identity, so a module's tables are decoded once
    per run however many processes or mappings share it, unwinding and
    symbolization alike. `fetch_debug` (build_id -> path | None) is asked for
    debug files not found locally; it is set only once no target is held."""

    def __init__(self, fetch_debug=None):
        self._images: dict[tuple, Image | str] = {}  # least recently used first
        self.fetch_debug = fetch_debug
        # (path as the target names it, build-id) -> the image opened for it,
        # so a report's frames find the very file that was unwound
        self.named: dict[tuple[str, str | None], Image] = {}

    @property
    def held(self) -> int:  # not __len__: an empty cache is still a cache (`cache or ...`)
        return len(self._images)

    def _get(self, key: tuple) -> Image | str | None:
        cached = self._images.pop(key, None)
        if cached is not None:
            self._images[key] = cached
        return cached

    def begin(self, keep: int) -> None:
        """A new run in a process that keeps its images (the service): the
        names and the fetcher of the last run are forgotten, and the least
        recently used images beyond `keep`."""
        self.named.clear()
        self.fetch_debug = None
        while len(self._images) > keep:
            del self._images[next(iter(self._images))]

    def from_file(self, open_path: str, real_path: str) -> Image:
        """Raises ElfError / OSError with a reason."""
        with open(open_regular(open_path), "rb") as f:
            st = os.fstat(f.fileno())
            key = ("file", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            cached = self._get(key)
            if cached is None:
                if st.st_size == 0:
                    raise ElfError(f"{real_path}: empty file")
                data = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                try:
                    cached = Image(ElfFile(data, real_path), real_path, self)
                except ElfError as e:
                    cached = str(e)
                self._images[key] = cached
        if isinstance(cached, str):
            raise ElfError(cached)
        self.named[(real_path, cached.build_id)] = cached
        return cached

    def from_memory(self, data: bytes, name: str) -> Image:
        key = ("mem", hash(data), len(data))
        cached = self._get(key)
        if cached is None:
            cached = Image(ElfFile(data, name), name)
            self._images[key] = cached
        self.named[(name, cached.build_id)] = cached
        return cached


class Module:
    """A plain class: dataclasses cost milliseconds to import."""
    __slots__ = ("path", "start", "end", "mappings", "image", "bias", "error", "found_by")

    def __init__(self, path: str, start: int, end: int, mappings: list[Mapping] | None = None,
                 image: Image | None = None, bias: int | None = None, error: str | None = None,
                 found_by: str | None = None):
        self.path = path
        self.start = start
        self.end = end
        self.mappings = [] if mappings is None else mappings
        self.image = image
        self.bias = bias
        self.error = error
        self.found_by = found_by  # how the space found its file (a core's: path, build-id, ...)

    def __repr__(self) -> str:
        return f"Module({self.path!r}, {self.start:#x}, {self.end:#x})"

    @property
    def build_id(self) -> str | None:
        return self.image.build_id if self.image else None

    def link(self, runtime: int) -> int | None:
        return None if self.bias is None else runtime - self.bias


class ModuleMap:
    """The modules of one address space, found by runtime address. Images
    are opened on first use so a walk pays only for the modules it visits."""

    def __init__(self, space: AddressSpace, cache: ImageCache | None = None):
        self.space = space
        self.cache = cache or ImageCache()
        maps = space.maps()
        self.modules = _group(maps)
        self.index = MapIndex(maps)  # every mapping, for the walks of this space's threads
        self._starts = [m.start for m in self.modules]
        self._loaded: set[int] = set()
        self._by_pc: dict[int, Module | None] = {}
        # the walks' CFI rows (and methods) by lookup pc: threads parked in
        # the same functions ask for the same rows
        self.rows: dict[int, tuple] = {}  # (Module, Row, method)

    def find(self, pc: int) -> Module | None:
        """The module whose executable mapping holds pc (a repeated pc, as in
        deep recursion, is a dict lookup)."""
        try:
            return self._by_pc[pc]
        except KeyError:
            pass
        if len(self._by_pc) > MAX_CACHED_PCS:
            self._by_pc.clear()
        module = self._by_pc[pc] = self._find(pc)
        return module

    def _find(self, pc: int) -> Module | None:
        i = bisect.bisect_right(self._starts, pc) - 1
        if i < 0 or pc >= self.modules[i].end:
            return None
        module = self.modules[i]
        if not any(pc in m and m.executable for m in module.mappings):
            return None
        self.load(module)
        return module

    def load(self, module: Module) -> Module:
        if id(module) in self._loaded:
            return module
        self._loaded.add(id(module))
        try:
            module.image = self._open(module)
            module.bias = _load_bias(module)
        except (OSError, ElfError, MemoryFault) as e:
            module.error = str(e)
        return module

    def load_all(self) -> list[Module]:
        return [self.load(m) for m in self.modules]

    def _open(self, module: Module) -> Image:
        first = module.mappings[0]
        if first.path == "[vdso]":
            size = module.end - module.start
            if size > MAX_IN_MEMORY_IMAGE:
                raise ElfError("[vdso]: implausibly large")
            return self.cache.from_memory(self.space.read(module.start, size), "[vdso]")
        open_path = self.space.file_for(first)
        if open_path is None:
            raise OSError(errno.ENOENT, "no file for it here", first.path)
        try:
            return self.cache.from_file(open_path, first.path)
        except OSError:
            if open_path == first.path:
                raise
            return self.cache.from_file(first.path, first.path)


def _group(mappings: list[Mapping]) -> list[Module]:
    """File-backed mappings of one file (and the vdso) become one module;
    only files with an executable mapping count."""
    by_file: dict[tuple, Module] = {}
    for m in mappings:
        if m.path == "[vdso]":
            key = ("[vdso]",)
        elif m.is_file:
            key = (m.dev, m.inode, m.path)
        else:
            continue
        module = by_file.get(key)
        if module is None:
            module = by_file[key] = Module(m.path, m.start, m.end)
        module.start = min(module.start, m.start)
        module.end = max(module.end, m.end)
        module.mappings.append(m)
    modules = [mod for mod in by_file.values() if any(m.executable for m in mod.mappings)]
    modules.sort(key=lambda mod: mod.start)
    return modules


def _load_bias(module: Module) -> int:
    """bias = runtime - link, from the lowest mapping and the PT_LOAD that
    holds its file offset (p_vaddr and p_offset agree modulo the page size)."""
    first = min(module.mappings, key=lambda m: m.offset)
    seg = module.image.elf.first_load(first.offset)
    if seg is None:
        raise ElfError(f"{module.path}: no PT_LOAD segment")
    return first.start - first.offset - seg.vaddr + seg.offset
