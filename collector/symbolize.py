"""Function names, file:line and inlined frames for a report, from each
frame's build_id + rel_pc alone: run on every report once the target is
released (through the delivery outlet), and later by `collector symbolize
REPORT.json` on a machine that has the debug files (locally, or from
debuginfod).

Inlined frames come out as extra frames with `inlined: true`, innermost
first, before the physical frame they are part of; the physical frame keeps
pc, sp, cfa and method, and its file:line is the outermost call site.

With a state directory (the caller's, else systemd's $STATE_DIRECTORY), what
was found at each address of a module with DWARF is kept on disk by
build-id (symcache), and a later cold run reads it instead of the DWARF.
"""
from __future__ import annotations

import os
import time

from unwinder.debuginfo import is_build_id, local_debug_file
from unwinder.symbols.demangle import demangle
from unwinder.symbols.lines import LineError
from unwinder.elf import ElfError
from unwinder.modules import Image, ImageCache
from unwinder.walk import symbol_pc

from . import symcache
from .debuginfod import Debuginfod

_LINE_FIELDS = ("file", "line", "column", "linkage_name")


class Symbolizer:
    """`cache`: the images the report was unwound with (the same files, even
    where the target's paths do not open here)."""

    def __init__(self, budget: float, cache: ImageCache | None = None,
                 state_dir: str | None = None):
        self.start = time.monotonic()
        self.deadline = self.start + budget
        self.budget = budget
        self.debuginfod = Debuginfod.from_env(self.deadline)
        self.cache = cache or ImageCache()
        if self.debuginfod and self.cache.fetch_debug is None:
            self.cache.fetch_debug = self.debuginfod.fetch
        self._images: dict[tuple, Image | None] = {}
        state_dir = state_dir or symcache.state_dir()
        self.store = symcache.SymbolCache(state_dir) if state_dir else None
        self._known: dict[int, tuple | None] = {}  # id(image) -> (image, fingerprint, found, loaded)
        self.errors: list[str] = []
        self.skipped = 0

    def report(self, report: dict) -> dict:
        """Symbolize every thread of `report` in place; say what was not done."""
        for thread in report.get("threads", []):
            thread["frames"] = self.frames(thread.get("frames", []))
        for image in self._images.values():
            if image is not None:
                self.errors += image.errors
        self._save()
        if self.debuginfod:
            self.errors += self.debuginfod.errors
        if self.skipped:
            self.errors.append(f"symbolization stopped at its time budget ({self.budget:g} s): "
                               f"{self.skipped} frames keep only what the unwinder found")
        errors = report.setdefault("errors", [])
        errors += [e for e in dict.fromkeys(self.errors) if e not in errors]
        report.setdefault("timings", {})["symbolize_ms"] = round(
            (time.monotonic() - self.start) * 1000, 3)
        return report

    def frames(self, frames: list[dict]) -> list[dict]:
        physical = [f for f in frames if not f.get("inlined")]
        out: list[dict] = []
        after_signal = False
        for i, frame in enumerate(physical):
            pc = frame.get("pc")
            exact = isinstance(pc, int) and \
                symbol_pc(pc, i, after_signal, bool(frame.get("signal_frame"))) == pc
            out += self.frame(frame, exact)
            after_signal = bool(frame.get("signal_frame"))
        for index, frame in enumerate(out):
            frame["index"] = index
        return out

    def frame(self, frame: dict, exact: bool) -> list[dict]:
        """The frame and its inlined frames, innermost first. `exact`: the
        pc is the instruction itself (frame 0, after a signal, a signal
        trampoline), else a return address looked up at pc - 1."""
        if frame.get("method") == "interpreter":  # named by the interpreter, not by ELF
            return [frame]
        if isinstance(frame.get("function"), str) and "linkage_name" not in frame:
            name_function(frame, frame["function"])
        rel_pc = frame.get("rel_pc")
        if not isinstance(rel_pc, int) or rel_pc < 0:
            return [frame]
        if time.monotonic() > self.deadline:
            self.skipped += 1
            return [frame]
        image = self.image(frame.get("module"), frame.get("build_id"))
        if image is None:
            return [frame]
        at = rel_pc if exact else rel_pc - 1
        for key in _LINE_FIELDS:
            frame.pop(key, None)
        found, locations = self._resolve(image, at)
        if found:
            name_function(frame, found[0])
            frame["offset"] = found[1] + (rel_pc - at)
        if not locations:
            return [frame]
        *inlined, own = locations
        out = []
        for loc in inlined:
            inline = dict(frame, cfa=None, offset=None, inlined=True)
            for key in ("linkage_name", "signal_frame"):
                inline.pop(key, None)
            name_function(inline, loc.linkage_name or loc.function)
            _place(inline, loc)
            out.append(inline)
        # DWARF's linkage name; else a mangled symbol, which says more than
        # DWARF's bare name (addr2line's choice); else DWARF's qualified name
        if own.linkage_name or (own.function and "linkage_name" not in frame):
            name_function(frame, own.linkage_name or own.function)
            if not found:
                frame["offset"] = None
        _place(frame, own)
        return out + [frame]

    def _resolve(self, image: Image, at: int) -> tuple:
        """(symbol table's (name, offset) or None, DWARF locations) at a
        link-time address: from the disk cache, else from the files."""
        known = self._cached(image)
        if known is not None and at in known[2]:
            return known[2][at]
        found = image.symbols.lookup(at)
        locations = []
        if image.lines is not None:
            try:
                locations = image.lines.locate(at)
            except LineError as e:
                image.errors.append(f"{image.path}: {e}")
                return found, locations
        if known is not None:
            known[2][at] = (found, locations)
        return found, locations

    def _cached(self, image: Image) -> tuple | None:
        """The disk cache's entries for a module with DWARF not yet read in
        this process (None: not cached; a warm process has it in memory)."""
        if id(image) not in self._known:
            known = None
            if self.store is not None and image.build_id and image.lines is not None \
                    and image.lines.fresh:
                print_ = symcache.fingerprint(image.elf, image.lines.elf)
                found = self.store.load(image.build_id, print_) or {}
                known = (image, print_, found, len(found))
            self._known[id(image)] = known
        return self._known[id(image)]

    def _save(self) -> None:
        """Write back what was found anew (not for a module with errors:
        a cached answer would leave them out)."""
        for known in self._known.values():
            if known is not None and len(known[2]) > known[3] and not known[0].errors:
                self.store.save(known[0].build_id, known[1], known[2])

    def image(self, path: str | None, build_id: str | None) -> Image | None:
        """The module's file if it is the same build, else its debug file
        found by build-id (locally, then debuginfod)."""
        key = (path, build_id)
        if key not in self._images:
            self._images[key] = self._open(path, build_id)
        return self._images[key]

    def _open(self, path, build_id):
        if not isinstance(build_id, (str, type(None))):
            return None
        unwound = self.cache.named.get((path, build_id)) if isinstance(path, str) else None
        if unwound is not None:
            return unwound
        if isinstance(path, str) and os.path.isfile(path):
            try:
                image = self.cache.from_file(path, path)
                if build_id is None or image.build_id == build_id:
                    return image
            except (OSError, ElfError):
                pass
        if not is_build_id(build_id):
            return None
        debug = local_debug_file(build_id, None, None)
        if debug is None and self.debuginfod is not None:
            debug = self.debuginfod.fetch(build_id)
        if debug is None:
            return None
        try:
            return self.cache.from_file(debug, debug)
        except (OSError, ElfError) as e:
            self.errors.append(f"{debug}: {e}")
            return None


def name_function(frame: dict, name: str) -> None:
    readable = demangle(name)
    frame["function"] = readable or name
    if readable:
        frame["linkage_name"] = name


def _place(frame: dict, loc) -> None:
    for key in ("file", "line", "column"):
        value = getattr(loc, key)
        if value is not None:
            frame[key] = value


def symbolize(report: dict, budget: float, cache: ImageCache | None = None,
              state_dir: str | None = None) -> dict:
    return Symbolizer(budget, cache, state_dir).report(report)
