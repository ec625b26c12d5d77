"""Every report of every command leaves through `Outlet.emit`: symbolized
(a failure there becomes an entry in the report's errors, never a lost
report), then written to --output/--report-dir, or handed to the sinks."""
from __future__ import annotations

import os

from ..errors import NotDelivered
from ..guard import stage


class Outlet:
    def __init__(self, cfg, args):
        self.config = cfg
        text = getattr(args, "format", None) == "text"  # else the configuration decides
        self._sinks = (cfg, args.sink, "text" if text else None)
        cfg.select(*self._sinks[1:])  # a sink that does not exist stops us here
        self._delivery = None
        self.output = getattr(args, "output", None)
        self.report_dir = getattr(args, "report_dir", None)
        self.budget = getattr(args, "symbolize_budget", 0)
        self.store_reports = getattr(args, "store_reports", True)  # into the local store
        self._images = None
        self.kept: dict | None = None

    def keep(self, report: dict) -> dict:
        """The command has its report (the first, if it makes more): from
        here on it goes out whatever happens to the command (cli.main)."""
        if self.kept is None:
            self.kept = report
        return self.kept

    @property
    def delivery(self):
        """Built when first used: its imports wait until a target is released."""
        if self._delivery is None:
            from .deliver import Delivery
            self._delivery = Delivery(*self._sinks)
        return self._delivery

    def close(self) -> None:
        if self._delivery is not None:
            self._delivery.close()

    @property
    def images(self):
        """The image cache of this run, shared by unwinding and symbolization."""
        if self._images is None:
            from unwinder.modules import ImageCache
            self._images = ImageCache()
        return self._images

    def emit(self, report: dict, symbolize: bool = True, early=None) -> str:
        """Send the report on (`symbolize`: unless that was done already,
        e.g. by the kernel handler's worker; `early`: storm control's
        decision before the analysis); returns where it went."""
        if symbolize:
            self.symbolize(report)
        if self.output or self.report_dir:
            prepared = self.delivery.prepare(report, self.store_reports, early)
            if prepared is None:
                return "nowhere: held back by storm control"
            return write_report(prepared, self.output, self.report_dir)
        self.delivery.deliver(report, self.store_reports, early)
        return "the configured sinks"

    def symbolize(self, report: dict, budget: float | None = None) -> None:
        """With the command's budget, or the one a service request gave."""
        budget = self.budget if budget is None else budget
        if budget > 0:
            stage(report.setdefault("errors", []), "symbolization", self._symbolize, report,
                  budget)

    def _symbolize(self, report: dict, budget: float) -> None:
        from ..symbolize import symbolize  # after the target is released
        symbolize(report, budget, self._images, self.config["collector"]["state_dir"])


def write_report(report: dict, output: str | None, report_dir: str | None) -> str:
    """Write atomically with mode 0600: to `output`, or a new file in `report_dir`."""
    import datetime  # like every import here but the class: after the capture
    import json

    from ..files import own_dir, write_atomic
    try:
        if output is None:
            own_dir(report_dir)
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
            output = os.path.join(report_dir, f"core-{stamp}-{report['process'].get('pid')}-"
                                              f"{report['report_id'][:8]}.json")
        write_atomic(output, json.dumps(report, separators=(",", ":")).encode() + b"\n")
    except OSError as e:
        raise NotDelivered(f"report {report.get('report_id')} could not be written to "
                           f"{output or report_dir}: {e.strerror or e}") from None
    return output
