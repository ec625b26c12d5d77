"""`collector symbolize REPORT.json`: name the frames of a report taken
elsewhere (the outlet symbolizes every report on its way out)."""
from __future__ import annotations

from ..errors import BadReport
from .options import add_budget_option, command_parser

MAX_REPORT = 256 << 20


def read_report(args) -> dict:
    try:
        with open(args.report, "rb") as f:
            raw = f.read(MAX_REPORT + 1)
    except OSError as e:
        raise BadReport(f"cannot read the report {args.report}: {e.strerror or e}") from None
    return parse_report(raw, args.report)


def parse_report(raw: bytes, name: str) -> dict:
    """The report, or BadReport (exit 2, one line) if `raw` is not one: too
    large, not JSON, nested without end, or no threads of frames. Values of
    the wrong type inside it are dropped, and its errors say so."""
    from ..conform import conform, loads
    if len(raw) > MAX_REPORT:
        raise BadReport(f"{name} is larger than {MAX_REPORT >> 20} MiB: not a report")
    try:
        report = loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadReport(f"{name} is not UTF-8 text: {e.reason} at byte {e.start}") from None
    except BadReport as e:
        raise BadReport(f"{name}: {e}") from None
    threads = report.get("threads") if isinstance(report, dict) else None
    if not isinstance(threads, list) or not all(
            isinstance(t, dict) and isinstance(t.get("frames", []), list) for t in threads):
        raise BadReport(f"{name} is not a collector report (threads of frames)")
    return conform(report)


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
