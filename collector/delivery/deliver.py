"""The one way out for every report (`attach`, `run`, `watch`, `core`):
redaction, storm control, then each sink; a sink that fails gets the report
later from the spool, in order, once (one it refused for good is set aside).
`collector flush` empties the spool."""
from __future__ import annotations

import os
import time

from ..errors import FlushIncomplete, NotDelivered
from ..guard import stage
from ..logging import log
from . import fingerprint, redact, sinks
from .spool import Spool
from .storm import Limiter
from .store import Store, StoreError


class Delivery:
    def __init__(self, config, only: list[str] = (), fmt: str | None = None):
        specs = config.select(only, fmt)
        self.sinks = [sinks.make(s) for s in specs]
        self.policy = redact.Policy.from_config(config["redact"])
        self.storm = config["storm"]
        self.limiter = Limiter(config["collector"]["state_dir"], self.storm)
        self.spool = Spool(config["spool"])
        self.store = Store(config["collector"]["state_dir"], config["store"])

    def admit(self, report: dict, early=None) -> bool:
        """`early`: storm control's decision on the crash before its analysis
        (service/early.py): it took the crash's token, none is taken again."""
        if early is not None:
            return self.admitted_early(report, early)
        # a core file someone asked about (`collector core FILE`) is never a storm
        if report.get("source") not in self.storm["sources"] or "path" in report.get("core", {}):
            return True
        try:
            admitted, suppressed, _ = self.limiter.admit(report.get("fingerprint") or "", time.time())
        except OSError as e:  # no state directory: deliver rather than lose
            log.warning("storm control unavailable", state_dir=self.limiter.dir, error=str(e))
            return True
        if suppressed:
            report["suppressed"] = suppressed
        if not admitted:
            log.info("report suppressed", fingerprint=report.get("fingerprint"),
                     report_id=report.get("report_id"))
        return admitted

    def admitted_early(self, report: dict, early) -> bool:
        if early.suppressed:
            report["suppressed"] = early.suppressed
        if report.get("fingerprint"):  # the store counts the key's suppressed crashes under it
            try:
                self.limiter.label(early.key.id, report["fingerprint"])
            except OSError:
                pass
        return True

    def prepare(self, report: dict, store: bool = True, early=None) -> dict | None:
        """The report as every output gets it: redacted and fingerprinted, and
        kept in the local store (`store`); None if storm control holds it back
        (`early`: it decided before the analysis, see admit). Each
        step is a stage: a redaction that fails leaves out what it could not
        redact, never sends it."""
        report = stage(report.setdefault("errors", []), "redaction", redact.apply, report,
                       self.policy, detail=False, fallback=lambda: redact.without_secrets(report))
        # here, not when the report is built: symbolization may have named frames since
        fp = stage(report["errors"], "fingerprinting", fingerprint.compute, report)
        report.pop("fingerprint", None)  # not one a report read from a file brought along
        if fp is not None:
            report["fingerprint"] = fp
        admitted = stage(report["errors"], "storm control", self.admit, report, early,
                         fallback=True)
        self.stored = None  # (report, its JSON as the store kept it)
        if store and self.store.enabled:
            try:
                if admitted:
                    self.stored = (report, self.store.add(report))
                else:
                    self.store.count_suppressed(report)
            except StoreError as e:  # the sinks still get it
                log.warning("report store unavailable", error=str(e))
        return report if admitted else None

    def deliver(self, report: dict, store: bool = True, early=None) -> None:
        report = self.prepare(report, store, early)
        if report is None:
            return
        later = [s for s in self.sinks if s.spool]
        owed = {s.name for s in later}  # shrinks as sinks take the report
        lost = []
        if later:
            try:
                with self.spool.locked():
                    dropped = self.spool.take_dropped()
                    if dropped:
                        report["spool_dropped"] = dropped
                    self.send_now(report, later, owed)
                    if owed:
                        self.spool.add(report, sorted(owed))
                        log.warning("report spooled", report_id=report.get("report_id"),
                                    sinks=sorted(owed))
            except OSError as e:  # no spool: one more direct try for the sinks still owed
                log.error("spool unavailable", dir=self.spool.dir, error=str(e))
                lost = [s.name for s in later if s.name in owed and not self.send(s, [report])]
        # stdout: the JSON the store made, unless a sink before it could have changed the report
        stored = self.stored[1] if self.stored and self.stored[0] is report and not later else None
        for sink in self.sinks:
            if not sink.spool:
                sink.send([report], None if stored is None else [stored])
        if lost:
            raise NotDelivered(f"report {report.get('report_id')} reached no sink of "
                               f"{', '.join(lost)} and could not be spooled in {self.spool.dir}")

    def send(self, sink, reports: list[dict]) -> bool:
        try:
            sink.send(reports)
            return True
        except sinks.Rejected as e:
            return self.set_aside(sink, reports, e)
        except Exception as e:  # any failure, even a bug in a sink, must not lose the report
            log.warning("sink failed", sink=sink.name, reports=len(reports),
                        error=f"{type(e).__name__}: {e}")
            return False

    def set_aside(self, sink, reports: list[dict], error: Exception) -> bool:
        """Reports a sink refused for good leave its queue (they would block
        every report behind them) but stay on disk; False if they cannot."""
        ids = [r.get("report_id") for r in reports]
        try:
            kept = [self.spool.set_aside(r, sink.name) for r in reports]
        except OSError as e:
            log.error("sink refused reports; cannot keep them", sink=sink.name, report_ids=ids,
                      error=str(error), spool_error=str(e))
            return False
        log.error("sink refused reports, set aside", sink=sink.name, report_ids=ids,
                  error=str(error), kept=kept)
        return True

    def send_now(self, report: dict, later: list, owed: set[str]) -> None:
        """Send the spool's backlog, then the report to each sink that has no
        backlog left and is not resting; those that take it leave `owed`."""
        now = time.time()
        backlog = self.drain(later, force=False)
        for sink in later:
            if sink.name in backlog or self.spool.resting(sink.name, now):
                continue
            if self.send(sink, [report]):
                owed.discard(sink.name)
                self.spool.mark(sink.name, None)
            else:
                self.spool.mark(sink.name, now)

    def drain(self, later: list, force: bool) -> dict[str, int]:
        """Send each sink what the spool owes it, oldest first, in batches;
        a sink stops at its first failure. -> sink name: reports still owed."""
        now = time.time()
        entries = self.spool.owed()
        backlog = {}
        for sink in later:
            owed = [n for n, pending in entries.items() if sink.name in pending]
            if owed and not force and self.spool.resting(sink.name, now):
                backlog[sink.name] = len(owed)
                continue
            while owed:
                batch = self.batch(sink, owed)
                if not self.send(sink, [self.spool.report(n) for n in batch]):
                    self.spool.mark(sink.name, time.time())
                    backlog[sink.name] = len(owed)
                    break
                for n in batch:  # first what was delivered, then the bookkeeping
                    self.spool.settle(n, sink.name)
                    entries[n].remove(sink.name)
                del owed[:len(batch)]
                self.spool.mark(sink.name, None)
        return backlog

    def batch(self, sink, owed: list[str]) -> list[str]:
        size, out = 0, []
        for n in owed[:sink.batch]:
            size += self.spool.size(n)
            if out and sink.batch_bytes and size > sink.batch_bytes:
                break
            out.append(n)
        return out

    def flush(self) -> str:
        later = [s for s in self.sinks if s.spool]
        if not os.path.isdir(self.spool.dir):
            return f"the spool {self.spool.dir} is empty"
        try:
            with self.spool.locked():
                before = len(self.spool.entries())
                backlog = self.drain(later, force=True)
                left = self.spool.owed()
        except OSError as e:
            raise FlushIncomplete(f"cannot use the spool {self.spool.dir}: {e.strerror or e}") \
                from None
        summary = f"{before - len(left)} of {before} spooled reports delivered"
        if backlog:
            raise FlushIncomplete(f"{summary}; still owed: " + ", ".join(
                f"{n} {c}" for n, c in backlog.items()) + " (they stay in the spool)")
        others = sorted({p for pending in left.values() for p in pending})
        if others:
            summary += f"; {len(left)} kept for sinks not configured: {', '.join(others)}"
        return summary


    def close(self) -> None:
        """The local store's database (the program ends with os._exit)."""
        self.store.close()
