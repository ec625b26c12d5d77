"""Function names, file:line and inlined frames for a report, from each
frame's build_id + rel_pc alone: run on every report once the target is
released (through the delivery outlet), and later by `collector symbolize
REPORT.json` on a machine that has the debug files (locally, or from
debuginfod).

Inlined frames come out as extra frames with `inlined: true`, innermost
first, before the physical frame they are part of; the physical frame keeps
pc, sp, cfa and method, and its file:line is the outermost call site.
"""
from __future__ import annotations

import os
import time

from unwinder.debuginfo import is_build_id, local_debug_file
from unwinder.symbols.demangle import demangle
from unwinder.elf import ElfError
from unwinder.modules import Image, ImageCache
from unwinder.walk import symbol_pc

from .debuginfod import Debuginfod

_LINE_FIELDS = ("file", "line", "column", "linkage_name")


class Symbolizer:
    """`cache`: the images the report was unwound with (the same files, even
    where the target's paths do not open here)."""

    def __init__(self, budget: float, cache: ImageCache | None = None):
        self.start = time.monotonic()
        self.deadline = self.start + budget
        self.budget = budget
        self.debuginfod = Debuginfod.from_env(self.deadline)
        self.cache = cache or ImageCache()
        if self.debuginfod and self.cache.fetch_debug is None:
            self.cache.fetch_debug = self.debuginfod.fetch
        self._images: dict[tuple, Image | None] = {}
        self.errors: list[str] = []
        self.skipped = 0

    def report(self, report: dict) -> dict:
        """Symbolize every thread of `report` in place; say what was not done."""
        for thread in report.get("threads", []):
            thread["frames"] = self.frames(thread.get("frames", []))
        for image in self._images.values():
            if image is not None:
                self.errors += image.errors
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
        found = image.symbols.lookup(at)
        if found:
            name_function(frame, found[0])
            frame["offset"] = found[1] + (rel_pc - at)
        locations = []
        if image.lines is not None:
            try:
                locations = image.lines.locate(at)
            except ValueError as e:  # lines.LineError; lines imports pyelftools, so not here
                image.errors.append(f"{image.path}: {e}")
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


def symbolize(report: dict, budget: float, cache: ImageCache | None = None) -> dict:
    return Symbolizer(budget, cache).report(report)
