"""Reports as journal entries, over the native journal protocol."""
from __future__ import annotations

from ...journal import send_fields
from ..journal_entry import fields
from . import Sink, SinkError


class JournaldSink(Sink):
    def send(self, reports: list[dict]) -> None:
        for report in reports:
            try:
                send_fields(self.settings["socket"], fields(report, self.settings["identifier"]))
            except OSError as e:
                raise SinkError(f"journald at {self.settings['socket']}: "
                                f"{e.strerror or e}") from None
