"""Option helpers the commands share."""
from __future__ import annotations

import argparse

from .. import config
from ..errors import EXIT_CODES
from ..targets import DEFAULT_KEEP, DEFAULT_STACK_WINDOW, DEFAULT_STOP_TIMEOUT

EPILOG = "exit codes:\n" + "\n".join(f"  {code!s:<5} {what}" for code, what in EXIT_CODES)
DEFAULT_BUDGET = 10.0


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


def command_parser(sub, name: str, **kw) -> argparse.ArgumentParser:
    p = sub.add_parser(name, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    config.add_arguments(p, suppress=True)
    return p


def add_budget_option(p) -> None:
    p.add_argument("--symbolize-budget", type=float, default=DEFAULT_BUDGET, metavar="SECONDS",
                   help="time for symbolization (debug files, debuginfod) per report; frames "
                   f"not reached keep what the unwinder found (default {DEFAULT_BUDGET:g}; "
                   "0 turns symbolization off)")


def add_unwind_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("json", "text"), default="json")
    p.add_argument("--max-frames", type=positive, default=1024, metavar="N",
                   help="frames per thread at most (default 1024)")
    add_budget_option(p)


def add_stop_options(p: argparse.ArgumentParser) -> None:
    """How much a command that stops a live process copies, and how long it waits."""
    p.add_argument("--stack-window", type=size, default=DEFAULT_STACK_WINDOW, metavar="BYTES",
                   help="stack bytes copied per thread while stopped (default 256K)")
    p.add_argument("--stop-timeout", type=float, default=DEFAULT_STOP_TIMEOUT,
                   metavar="SECONDS", help="how long to wait for every thread to stop "
                   f"(default {DEFAULT_STOP_TIMEOUT:g})")


def add_stream_options(p) -> None:
    """A core read from the kernel (pipe or socket), and where its report goes."""
    p.add_argument("--stack-window", type=size, default=DEFAULT_STACK_WINDOW,
                   metavar="BYTES", help="stack bytes kept per thread (default 256K)")
    p.add_argument("--keep", type=size, default=DEFAULT_KEEP, metavar="BYTES",
                   help="bytes of the core kept in memory in all (default 32M)")
    p.add_argument("--idle-timeout", type=positive, default=30, metavar="SECONDS",
                   help="give up on a core that stops arriving (default 30)")
    add_output_options(p)


def add_output_options(p) -> None:
    p.add_argument("--report-dir", metavar="DIR",
                   help="write each report to a new file in DIR (mode 0600) rather than to "
                   "the configured sinks")
    p.add_argument("--output", metavar="FILE", help="write the report to FILE (mode 0600)")
