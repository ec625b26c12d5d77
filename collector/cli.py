"""The `collector` command: parse, configure, dispatch, and the only place
that turns errors into exit codes.

Each command is a module of commands/ with `register(subparsers)` that sets
`func` (args -> report dict, or None when there is nothing more to report)
on its parser, and may set `first` (args -> None), run before the
configuration is read: attach stops its target as soon after exec as it
can. A report `func` returns leaves through the outlet. A command
that has its report before its work is done (run, watch, attach) hands it
to `args.outlet.keep` at once, so that a failure after that still sends it.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

from . import __version__, config
from .commands import COMMANDS
from .commands.options import EPILOG, Formatter
from .errors import INTERRUPTED, CollectorError
from .streams import std_streams


def _modules(argv: list[str]) -> list[str]:
    """Only the named command's module when the command line names one:
    importing them all costs more than a whole attach of a small process."""
    named = next((a for a in argv if a in COMMANDS), None)
    if named:
        return [COMMANDS[named]]
    return [] if "--version" in argv else list(dict.fromkeys(COMMANDS.values()))


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    return _parser(tuple(_modules(sys.argv[1:] if argv is None else argv)))


@functools.cache  # the service parses every request's command line
def _parser(modules: tuple[str, ...]) -> argparse.ArgumentParser:
    import importlib
    p = argparse.ArgumentParser(
        prog="collector", description="Crash backtraces of Linux x86-64 processes, as JSON.",
        epilog=EPILOG, formatter_class=Formatter)
    p.add_argument("--version", action="version", version=f"collector {__version__}")
    config.add_arguments(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        importlib.import_module(f".commands.{name}", __package__).register(sub)
    return p


def configure(args) -> None:
    """Read the configuration and set up logging and the outlet: before any
    work but a command's `first` step, so that a bad file stops us early."""
    from . import logging
    from .delivery.outlet import Outlet
    cfg = config.load(args.config, tuple(args.set))
    log = cfg["log"]
    logging.setup(args.log_level or log["level"], log["target"])
    args.outlet = Outlet(cfg, args)
    args.worker = cfg["worker"]
    args.service = cfg["service"]


def command(args) -> dict | None:
    """The command's report. A command that fails once it has one (see
    Outlet.keep) sends it first, saying why in its errors, then fails as it
    would have: exit 1 for a bug in us, the error's code otherwise."""
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as e:
        report = args.outlet.kept
        if report is not None:
            report.setdefault("errors", []).append(
                f"{args.command} failed after the report was taken: {type(e).__name__}: {e}")
            args.outlet.emit(report)
        raise


def main(argv: list[str] | None = None, first=None) -> int:
    """`first`: the command's first step, done already (attach.quick)."""
    std_streams()
    args = parser(argv).parse_args(argv)
    if first is not None:
        args.first = first
    return run(args)


def run(args, report: dict | None = None, close: bool = True) -> int:
    """The parsed command line's exit status. `report`: the command's
    report, made already (by the service, for a client:
    service/clients.py), to deliver only. `close` False: the caller closes
    args.outlet (the service, once the client has its answer)."""
    try:
        first = getattr(args, "first", None)  # a capture that must not wait for the rest
        if first is not None and report is None:
            first(args)
        configure(args)
        if report is None:
            report = command(args)
        else:
            args.outlet.budget = 0  # symbolized where it was made
            args.outlet.keep(report)
        if report is not None:
            args.outlet.emit(report)
        return getattr(args, "exit_status", 0)
    except CollectorError as e:
        print(f"collector: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("collector: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:  # a bug in us: one line, the traceback only on request
        print(f"collector: internal error: {type(e).__name__}: {e} "
              "(set COLLECTOR_DEBUG=1 for details)", file=sys.stderr)
        if os.environ.get("COLLECTOR_DEBUG"):
            import traceback
            traceback.print_exc()
        return 1
    finally:
        if close and getattr(args, "outlet", None) is not None:
            args.outlet.close()
