"""`collector list [MATCH...]`: the stored reports, one line each, like
`coredumpctl list`; `--group` one line per fingerprint."""
from __future__ import annotations

import datetime
import json
import shutil
import sys

from ..delivery.lookup import Lookup
from ..text import clean
from .options import add_match_options, command_parser, positive

COLUMNS = ("TIME", "PID", "UID", "GID", "SIG", "EXE", "FINGERPRINT")
GROUP_COLUMNS = ("COUNT", "SUPPRESSED", "FIRST", "LAST", "EXE", "FUNCTION", "FINGERPRINT")


def stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).astimezone().strftime("%a %Y-%m-%d %H:%M:%S %Z")


def cells(row: dict) -> list[str]:
    sig = (row["signal_name"] or "").removeprefix("SIG") or \
        (str(row["signal"]) if row["signal"] else "-")
    return [stamp(row["time"]), str(row["pid"]), str(row["uid"]), str(row["gid"]),
            "snapshot" if row["snapshot"] else sig, clean(row["exe"] or row["name"] or "?"),
            row["fingerprint"] or "-"]


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
    stored = Lookup(args.outlet.delivery.store, args.journal, args.namespace)

    def find(**kw) -> list[dict]:
        return stored.find(args.match, args.since, args.until, args.all, **kw)

    if args.group:
        found = stored.groups(find(), args.reverse)
        if args.json:
            sys.stdout.write(json.dumps(found) + "\n")
            return
        rows = [[str(g["count"]), str(g["suppressed"]), stamp(g["first"]), stamp(g["last"]),
                 clean(g["exe"] or "?"), clean(g["function"] or "?"), g["fingerprint"] or "-"]
                for g in found]
        sys.stdout.write(table(GROUP_COLUMNS, rows, shrink=4))
        return
    limit = 1 if args.one else args.lines
    found = find(newest_first=args.reverse, limit=limit)
    if args.json:
        sys.stdout.write(json.dumps(found) + "\n")
        return
    sys.stdout.write(table(COLUMNS, [cells(r) for r in found], shrink=5))


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
