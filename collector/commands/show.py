"""`collector show [MATCH...]`: the newest matching stored report, as text
with its backtrace (like `coredumpctl info`), or whole as JSON."""
from __future__ import annotations

import json
import sys

from ..delivery.store import StoreError
from ..errors import StoreUnavailable
from ..text import info, render
from .list import add_match_options, find, store_of
from .options import command_parser


def show(args) -> None:
    row, = find(args, newest_first=True, limit=1)
    try:
        report = store_of(args).report(row["report_id"])
    except StoreError as e:
        raise StoreUnavailable(str(e)) from None
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(info(report) + render(report))


def register(sub) -> None:
    p = command_parser(sub, "show", help="the newest matching stored report, like coredumpctl info",
                       description="Show the newest report in the local store that matches, "
                       "with its backtrace. Exits 1 if none matches.")
    add_match_options(p)
    p.set_defaults(func=show)
