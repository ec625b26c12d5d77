"""Where a module's separate debug information is, in the order gdb and
elfutils look: by build-id under each debug directory, then by
.gnu_debuglink next to the file, in its .debug/ and under each debug
directory; and its MiniDebugInfo (.gnu_debugdata: an xz-compressed ELF
holding a .symtab, as Fedora ships).

Only local files here: a network lookup (debuginfod) is the collector's and
reaches Image as a callable, so the engine never does network I/O.
"""
from __future__ import annotations

import os

from .elf import ElfError, ElfFile

DEBUG_DIRS_ENV = "COLLECTOR_DEBUG_DIRS"  # colon-separated, like gdb's debug-file-directory
DEFAULT_DEBUG_DIRS = ("/usr/lib/debug",)
MAX_MINIDEBUGINFO = 64 << 20


def debug_dirs() -> list[str]:
    value = os.environ.get(DEBUG_DIRS_ENV)
    return [d for d in value.split(":") if d] if value else list(DEFAULT_DEBUG_DIRS)


def is_build_id(text: str | None) -> bool:
    """A build-id safe to put in a path or a URL: hex, at least 2 bytes."""
    return isinstance(text, str) and 4 <= len(text) <= 128 and \
        all(c in "0123456789abcdef" for c in text)


def local_debug_file(build_id: str | None, real_path: str | None,
                     debuglink: str | None) -> str | None:
    candidates = []
    dirs = debug_dirs()
    if is_build_id(build_id):
        candidates += [f"{d}/.build-id/{build_id[:2]}/{build_id[2:]}.debug" for d in dirs]
    if debuglink and real_path and "/" not in debuglink:
        here = os.path.dirname(real_path)
        candidates += [os.path.join(here, debuglink), os.path.join(here, ".debug", debuglink)]
        candidates += [d + os.path.join(here, debuglink) for d in dirs]
    return next((c for c in candidates if os.path.isfile(c) and c != real_path), None)


def minidebuginfo(elf: ElfFile) -> ElfFile | None:
    """The ELF inside .gnu_debugdata, or None. Raises ElfError if corrupt."""
    data = elf.section_data(".gnu_debugdata")
    if data is None:
        return None
    import lzma  # only for the few files that carry MiniDebugInfo
    try:
        inner = lzma.LZMADecompressor().decompress(bytes(data), MAX_MINIDEBUGINFO)
    except lzma.LZMAError as e:
        raise ElfError(f"{elf.name}: .gnu_debugdata: {e}") from None
    return ElfFile(inner, f"{elf.name}:.gnu_debugdata")
