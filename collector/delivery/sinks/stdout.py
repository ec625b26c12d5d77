"""Reports on standard output: NDJSON (the default) or text for a human.
Not spooled: a later run's stdout is somebody else's."""
from __future__ import annotations

import sys

from . import Sink, line


class StdoutSink(Sink):
    spool = False

    def send(self, reports: list[dict]) -> None:
        for report in reports:
            if self.settings["format"] == "text":
                from ...text import render
                sys.stdout.write(render(report))
            else:
                sys.stdout.write(line(report).decode())
        sys.stdout.flush()
