"""`collector symbolize REPORT.json`: name the frames of a report taken
elsewhere (the outlet symbolizes every report on its way out)."""
from __future__ import annotations

import json

from ..errors import BadReport
from .options import add_budget_option, command_parser


def read_report(args) -> dict:
    try:
        with open(args.report) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        raise BadReport(f"cannot read the report {args.report}: {e}") from None
    threads = report.get("threads") if isinstance(report, dict) else None
    if not isinstance(threads, list) or not isinstance(report.get("errors", []), list) or \
            not isinstance(report.get("timings", {}), dict) or not all(
            isinstance(t, dict) and isinstance(t.get("frames", []), list) and
            all(isinstance(f, dict) for f in t.get("frames", [])) for t in threads):
        raise BadReport(f"{args.report} is not a collector report (threads of frames)")
    return report


def register(sub) -> None:
    p = command_parser(sub, "symbolize", help="add functions, file:line and inlined frames "
                       "to a report taken elsewhere",
                       description="Symbolize REPORT.json from each frame's build_id and "
                       "rel_pc, with local debug files and debuginfod ($DEBUGINFOD_URLS), "
                       "and print the enriched report.")
    p.add_argument("report", metavar="REPORT.json")
    p.add_argument("--format", choices=("json", "text"), default="json")
    add_budget_option(p)
    p.set_defaults(func=read_report, store_reports=False)  # a report taken elsewhere
