"""Finding reports kept earlier, for `list` and `show`: in the local store,
or (the store turned off, or asked for) in the journal, where the journald
sink wrote them; those are searched through a store in memory, so both
match exactly alike."""
from __future__ import annotations

import json
import subprocess

from ..errors import NoMatch, StoreUnavailable
from .journal_entry import MESSAGE_ID
from .store import Store, StoreError


class Lookup:
    def __init__(self, store: Store, journal: bool = False, namespace: str | None = None):
        self.store = journal_store(store.s, namespace) if journal or not store.enabled \
            else store

    def find(self, matches: list[tuple[str, str]], since: float | None, until: float | None,
             snapshots: bool, **kw) -> list[dict]:
        """Rows of the matching reports (NoMatch if none)."""
        try:
            rows = self.store.find(matches, since, until, snapshots=snapshots, **kw)
        except StoreError as e:
            if "no report store" in str(e):
                raise NoMatch(f"no reports stored yet ({self.store.path})") from None
            raise StoreUnavailable(str(e)) from None
        if not rows:
            raise NoMatch("no stored report matches")
        return rows

    def report(self, row: dict) -> dict:
        try:
            return self.store.report(row["report_id"])
        except StoreError as e:
            raise StoreUnavailable(str(e)) from None

    def groups(self, rows: list[dict], newest_first: bool) -> list[dict]:
        """One entry per fingerprint: count (suppressed ones too), first, last,
        exe and top function."""
        try:
            suppressed = self.store.suppressed()
        except StoreError as e:
            raise StoreUnavailable(str(e)) from None
        out: dict[str, dict] = {}
        for row in rows:
            g = out.setdefault(row["fingerprint"] or "-", {
                "fingerprint": row["fingerprint"], "count": 0, "first": row["time"],
                "exe": row["exe"] or row["name"], "function": row["function"]})
            g["count"] += 1
            g["last"] = row["time"]
            g["function"] = row["function"] or g["function"]
        for fp, g in out.items():
            s = suppressed.get(fp) or {}
            g["suppressed"] = s.get("count", 0)
            if s:
                g["first"], g["last"] = min(g["first"], s["first"]), max(g["last"], s["last"])
            g["count"] += g["suppressed"]
        return sorted(out.values(), key=lambda g: g["last"], reverse=newest_first)


def journal_store(settings: dict, namespace: str | None) -> Store:
    argv = ["journalctl", "-o", "json", "--all", "--no-pager",
            "--output-fields=COLLECTOR_REPORT", f"MESSAGE_ID={MESSAGE_ID}"]
    if namespace:
        argv.insert(1, f"--namespace={namespace}")
    try:
        out = subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StoreUnavailable(f"cannot read the journal: {e}") from None
    if out.returncode != 0 and not out.stdout:
        why = out.stderr.decode("utf-8", "replace").strip().splitlines()
        raise StoreUnavailable(f"journalctl failed: {why[-1] if why else out.returncode}")
    store = Store(None, settings)
    for line in out.stdout.splitlines():
        try:
            report = json.loads(json.loads(line)["COLLECTOR_REPORT"])
        except (ValueError, KeyError, TypeError):
            continue  # an entry cut short, or not one of ours
        if isinstance(report, dict) and report.get("report_id"):
            store.add(report, trim=False)
    return store
