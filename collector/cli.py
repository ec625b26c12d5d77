"""The `collector` command. The only place that turns errors into exit codes.

Each command is a module with `register(subparsers)` that sets `run` (args ->
report dict, or None when there is nothing to report) on its parser; every
report leaves through `emit`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from . import __version__
from .errors import EXIT_CODES, CollectorError

EPILOG = "exit codes:\n" + "\n".join(f"  {code:<3} {what}" for code, what in EXIT_CODES)


def size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().rstrip("ib")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256K, 1M)") from None


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number: {text!r}")
    return value


def add_unwind_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("json", "text"), default="json")
    p.add_argument("--max-frames", type=positive, default=1024, metavar="N",
                   help="frames per thread at most (default 1024)")


def command_parser(sub, name: str, **kw) -> argparse.ArgumentParser:
    return sub.add_parser(name, epilog=EPILOG,
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


def parser() -> argparse.ArgumentParser:
    from . import attach
    p = argparse.ArgumentParser(
        prog="collector", description="Crash backtraces of Linux x86-64 processes, as JSON.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"collector {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (attach,):
        command.register(sub)
    return p


def emit(report: dict, args) -> None:
    if args.format == "text":
        from .text import render
        sys.stdout.write(render(report))
    else:
        sys.stdout.write(json.dumps(report, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        report = args.run(args)
        if report is not None:
            emit(report, args)
        return getattr(args, "exit_status", 0)
    except CollectorError as e:
        print(f"collector: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("collector: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:  # a bug in us: one line, the traceback only on request
        print(f"collector: internal error: {type(e).__name__}: {e} "
              "(set COLLECTOR_DEBUG=1 for details)", file=sys.stderr)
        if os.environ.get("COLLECTOR_DEBUG"):
            traceback.print_exc()
        return 1
