"""The `collector` command. The only place that turns errors into exit codes.

Each command is a module with `register(subparsers)` that sets `run` (args ->
report dict, or None when there is nothing to report) on its parser; every
report leaves through `emit`.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__, config
from .errors import EXIT_CODES, CollectorError

EPILOG = "exit codes:\n" + "\n".join(f"  {code:<3} {what}" for code, what in EXIT_CODES)


def size(text: str) -> int:
    try:
        return config.parse_size(text)
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
    from .symbolize import add_budget_option
    p.add_argument("--format", choices=("json", "text"), default="json")
    p.add_argument("--max-frames", type=positive, default=None, metavar="N",
                   help="frames per thread at most (default: to the end of the stack)")
    add_budget_option(p)


def add_stop_options(p: argparse.ArgumentParser) -> None:
    """How much a command that stops a live process copies, and how long it waits."""
    p.add_argument("--stack-window", type=size, default="256K", metavar="BYTES",
                   help="stack bytes copied per thread while stopped (default 256K)")
    p.add_argument("--stop-timeout", type=float, default=2.0, metavar="SECONDS",
                   help="how long to wait for every thread to stop (default 2)")


def command_parser(sub, name: str, **kw) -> argparse.ArgumentParser:
    p = sub.add_parser(name, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    config.add_arguments(p, suppress=True)
    return p


# command -> the module that registers it
COMMANDS = {"attach": "attach", "run": "run", "watch": "watch", "core": "core",
            "serve": "serve", "install-handler": "handler", "uninstall-handler": "handler",
            "symbolize": "symbolize", "flush": "deliver"}


def _modules(argv: list[str]) -> list[str]:
    """Only the named command's module when the command line names one:
    importing them all costs more than a whole attach of a small process."""
    named = next((a for a in argv if a in COMMANDS), None)
    if named:
        return [COMMANDS[named]]
    return [] if "--version" in argv else list(dict.fromkeys(COMMANDS.values()))


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    import importlib
    p = argparse.ArgumentParser(
        prog="collector", description="Crash backtraces of Linux x86-64 processes, as JSON.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"collector {__version__}")
    config.add_arguments(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _modules(sys.argv[1:] if argv is None else argv):
        importlib.import_module(f".{name}", __package__).register(sub)
    return p


def emit(report: dict, args) -> None:
    args.delivery.deliver(report)


def configure(args) -> None:
    """Read the configuration and set up logging and delivery (before any
    target is touched, so that a bad file stops us early)."""
    from . import logging
    from .deliver import Delivery
    cfg = config.load(args.config, tuple(args.set))
    log = cfg["log"]
    logging.setup(args.log_level or log["level"], log["target"])
    text = getattr(args, "format", None) == "text"  # else the configuration decides
    args.delivery = Delivery(cfg, args.sink, "text" if text else None)


def std_streams() -> None:
    """The kernel starts a core_pattern handler with fds 1 and 2 closed:
    put /dev/null there before any file we open can take them, so that a
    print or a log line neither fails nor lands in a report file."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, "w", closefd=False))


def main(argv: list[str] | None = None) -> int:
    std_streams()
    args = parser(argv).parse_args(argv)
    try:
        configure(args)
        report = args.run(args)
        if report is not None and getattr(args, "symbolize_budget", 0) > 0:
            from .symbolize import symbolize  # after the target is released
            symbolize(report, args.symbolize_budget)
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
            import traceback
            traceback.print_exc()
        return 1
