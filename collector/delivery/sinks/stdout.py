"""Reports on standard output: NDJSON (the default) or text for a human.
Not spooled: a later run's stdout is somebody else's. A report the text
cannot render goes out as JSON, saying why."""
from __future__ import annotations

import sys

from ...guard import stage
from ...text import Style, render
from . import Sink, line


class StdoutSink(Sink):
    spool = False

    def send(self, reports: list[dict], encoded: list[str] | None = None) -> None:
        """`encoded`: the reports as JSON already, where the caller has them."""
        for i, report in enumerate(reports):
            if self.settings["format"] == "text":
                errors = list(report.get("errors") or [])
                text = stage(errors, "text rendering", render, report, Style.of(sys.stdout))
                sys.stdout.write(text if text is not None else
                                 line({**report, "errors": errors}).decode())
            elif encoded is not None:
                sys.stdout.write(encoded[i] + "\n")
            else:
                sys.stdout.write(line(report).decode())
        sys.stdout.flush()

