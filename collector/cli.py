"""The `collector` command. The only place that turns errors into exit codes."""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from . import __version__
from .errors import EXIT_CODES, CollectorError

EPILOG = "exit codes:\n" + "\n".join(f"  {code:<3} {what}" for code, what in EXIT_CODES)


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().rstrip("ib")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256K, 1M)") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number: {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="collector", description="Crash backtraces of Linux x86-64 processes, as JSON.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"collector {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    a = sub.add_parser("attach", help="backtrace every thread of a running process",
                       description="Stop the process briefly, copy its stacks, let it go, "
                       "and print a backtrace of every thread.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("pid", type=_positive, help="the process id")
    a.add_argument("--format", choices=("json", "text"), default="json")
    a.add_argument("--max-frames", type=_positive, default=1024, metavar="N",
                   help="frames per thread at most (default 1024)")
    a.add_argument("--stack-window", type=_size, default="256K", metavar="BYTES",
                   help="stack bytes copied per thread while stopped (default 256K)")
    a.add_argument("--stop-timeout", type=float, default=2.0, metavar="SECONDS",
                   help="how long to wait for every thread to stop (default 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "attach":
            from .attach import attach
            rep = attach(args.pid, args.max_frames, args.stack_window, args.stop_timeout)
        if args.format == "text":
            from .text import render
            sys.stdout.write(render(rep))
        else:
            sys.stdout.write(json.dumps(rep, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return 0
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
