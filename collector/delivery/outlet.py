"""Every report of every command leaves through `Outlet.emit`: symbolized
(a failure there becomes an entry in the report's errors, never a lost
report), then written to --output/--report-dir, or handed to the sinks."""
from __future__ import annotations

import datetime
import json
import os

from ..files import own_dir, write_atomic
from .deliver import Delivery


class Outlet:
    def __init__(self, cfg, args):
        text = getattr(args, "format", None) == "text"  # else the configuration decides
        self.delivery = Delivery(cfg, args.sink, "text" if text else None)
        self.output = getattr(args, "output", None)
        self.report_dir = getattr(args, "report_dir", None)
        self.budget = getattr(args, "symbolize_budget", 0)
        self._images = None

    @property
    def images(self):
        """The image cache of this run, shared by unwinding and symbolization."""
        if self._images is None:
            from unwinder.modules import ImageCache
            self._images = ImageCache()
        return self._images

    def emit(self, report: dict, symbolize: bool = True) -> str:
        """Send the report on (`symbolize`: unless that was done already,
        e.g. by the kernel handler's worker); returns where it went."""
        if symbolize:
            self.symbolize(report)
        if self.output or self.report_dir:
            prepared = self.delivery.prepare(report)
            if prepared is None:
                return "nowhere: held back by storm control"
            return write_report(prepared, self.output, self.report_dir)
        self.delivery.deliver(report)
        return "the configured sinks"

    def symbolize(self, report: dict) -> None:
        if self.budget <= 0:
            return
        try:
            from ..symbolize import symbolize  # after the target is released
            symbolize(report, self.budget, self._images)
        except Exception as e:  # a bug in the symbolizer must not cost the report
            report.setdefault("errors", []).append(
                f"symbolization failed: {type(e).__name__}: {e}")


def write_report(report: dict, output: str | None, report_dir: str | None) -> str:
    """Write atomically with mode 0600: to `output`, or a new file in `report_dir`."""
    if output is None:
        own_dir(report_dir)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        output = os.path.join(report_dir, f"core-{stamp}-{report['process']['pid']}-"
                                          f"{report['report_id'][:8]}.json")
    write_atomic(output, json.dumps(report, separators=(",", ":")).encode() + b"\n")
    return output
