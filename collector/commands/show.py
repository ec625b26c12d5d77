"""`collector show [MATCH...]`: the newest matching stored report, as text
with its backtrace (like `coredumpctl info`), or whole as JSON."""
from __future__ import annotations

import json
import sys

from ..delivery.lookup import Lookup
from ..text import Style, info, render
from .options import add_match_options, command_parser


def show(args) -> None:
    stored = Lookup(args.outlet.delivery.store, args.journal, args.namespace)
    row, = stored.find(args.match, args.since, args.until, args.all, newest_first=True,
                       limit=1)
    report = stored.report(row)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(info(report) + render(report, Style.of(sys.stdout)))


def register(sub) -> None:
    p = command_parser(sub, "show", help="the newest matching stored report, like coredumpctl info",
                       description="Show the newest report in the local store that matches, "
                       "with its backtrace. Exits 1 if none matches.")
    add_match_options(p)
    p.set_defaults(func=show)
