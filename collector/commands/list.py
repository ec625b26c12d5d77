"""`collector list [MATCH...]`: the stored reports, one line each, like
`coredumpctl list`; `--group` one line per fingerprint."""
from __future__ import annotations

import datetime
import json
import shutil
import sys

from ..delivery.journal_entry import MESSAGE_ID
from ..delivery.store import Store, StoreError
from ..errors import NoMatch, StoreUnavailable
from ..text import escape
from .options import command_parser, match, positive, when

COLUMNS = ("TIME", "PID", "UID", "GID", "SIG", "EXE", "FINGERPRINT")
GROUP_COLUMNS = ("COUNT", "SUPPRESSED", "FIRST", "LAST", "EXE", "FUNCTION", "FINGERPRINT")


def store_of(args) -> Store:
    """The local store, or (--journal, or the store turned off) the reports
    the journald sink wrote, read back from the journal."""
    if getattr(args, "_store", None) is None:
        store = args.outlet.delivery.store
        args._store = journal_store(args, store.s) if args.journal or not store.enabled \
            else store
    return args._store


def journal_store(args, settings: dict) -> Store:
    import subprocess
    argv = ["journalctl", "-o", "json", "--all", "--no-pager",
            "--output-fields=COLLECTOR_REPORT", f"MESSAGE_ID={MESSAGE_ID}"]
    if args.namespace:
        argv.insert(1, f"--namespace={args.namespace}")
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


def find(args, **kw) -> list[dict]:
    """Rows matching the command line (NoMatch if none)."""
    store = store_of(args)
    try:
        rows = store.find(args.match, args.since, args.until, snapshots=args.all, **kw)
    except StoreError as e:
        if "no report store" in str(e):
            raise NoMatch(f"no reports stored yet ({store.path})") from None
        raise StoreUnavailable(str(e)) from None
    if not rows:
        raise NoMatch("no stored report matches")
    return rows


def stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).astimezone().strftime("%a %Y-%m-%d %H:%M:%S %Z")


def cells(row: dict) -> list[str]:
    sig = (row["signal_name"] or "").removeprefix("SIG") or \
        (str(row["signal"]) if row["signal"] else "-")
    return [stamp(row["time"]), str(row["pid"]), str(row["uid"]), str(row["gid"]),
            "snapshot" if row["snapshot"] else sig, escape(row["exe"] or row["name"] or "?"),
            row["fingerprint"] or "-"]


def groups(args) -> list[dict]:
    rows = find(args, newest_first=False)
    try:
        suppressed = store_of(args).suppressed()
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
    return sorted(out.values(), key=lambda g: g["last"], reverse=args.reverse)


def table(header: tuple[str, ...], rows: list[list[str]], shrink: int) -> str:
    """Columns padded to their widest cell; column `shrink` cut (from the
    left, paths keep their names) to fit a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    if sys.stdout.isatty():
        room = shutil.get_terminal_size().columns - (sum(widths) - widths[shrink]) \
            - (len(widths) - 1)
        if room < widths[shrink]:
            widths[shrink] = max(len(header[shrink]), room)
            for r in rows:
                if len(r[shrink]) > widths[shrink]:
                    r[shrink] = "…" + r[shrink][len(r[shrink]) - widths[shrink] + 1:]
    lines = [header, *rows]
    return "\n".join(" ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines) + "\n"


def list_reports(args) -> None:
    if args.group:
        found = groups(args)
        if args.json:
            sys.stdout.write(json.dumps(found) + "\n")
            return
        rows = [[str(g["count"]), str(g["suppressed"]), stamp(g["first"]), stamp(g["last"]),
                 escape(g["exe"] or "?"), escape(g["function"] or "?"), g["fingerprint"] or "-"]
                for g in found]
        sys.stdout.write(table(GROUP_COLUMNS, rows, shrink=4))
        return
    limit = 1 if args.one else args.lines
    found = find(args, newest_first=args.reverse, limit=limit)
    if args.json:
        sys.stdout.write(json.dumps(found) + "\n")
        return
    sys.stdout.write(table(COLUMNS, [cells(r) for r in found], shrink=5))


def add_match_options(p) -> None:
    p.add_argument("match", nargs="*", type=match, metavar="MATCH",
                   help="PID, executable path, command name, or FIELD=VALUE "
                   "(fingerprint=, unit=, signal=, uid=, exe=, name=, pid=)")
    p.add_argument("-S", "--since", type=when, metavar="TIME",
                   help="reports at or after TIME ('2026-12-01 10:00', today, '1h ago')")
    p.add_argument("-U", "--until", type=when, metavar="TIME", help="reports at or before TIME")
    p.add_argument("--all", action="store_true", help="attach snapshots too")
    p.add_argument("--json", action="store_true", help="JSON rather than text")
    p.add_argument("--journal", action="store_true",
                   help="read the reports the journald sink wrote, from the journal (the "
                   "default when [store] enabled = false)")
    p.add_argument("--namespace", metavar="NS", help="with --journal: journalctl's --namespace")


def register(sub) -> None:
    p = command_parser(sub, "list", help="the stored crash reports, like coredumpctl list",
                       description="List the reports kept in the local store "
                       "(STATE_DIR/reports.db), oldest first. Exits 1 if none matches.")
    add_match_options(p)
    p.add_argument("-1", dest="one", action="store_true", help="only the newest")
    p.add_argument("-n", dest="lines", type=positive, metavar="N", help="the newest N")
    p.add_argument("-r", "--reverse", action="store_true", help="newest first")
    p.add_argument("--group", action="store_true",
                   help="one line per fingerprint, suppressed crashes counted")
    p.set_defaults(func=list_reports)
