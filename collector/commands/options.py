"""Option helpers the commands share."""
from __future__ import annotations

import argparse
import os
import sys

from .. import config
from ..errors import EXIT_CODES
from ..targets import DEFAULT_KEEP, DEFAULT_STACK_WINDOW, DEFAULT_STOP_TIMEOUT

EPILOG = "exit codes:\n" + "\n".join(f"  {code!s:<5} {what}" for code, what in EXIT_CODES)
DEFAULT_BUDGET = 10.0


class Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse makes a formatter for every add_argument, and the default
    one imports shutil (with bz2, lzma) for the terminal width: more than
    stopping a thread costs. The width is found as shutil finds it."""

    def __init__(self, prog: str, **kw):
        super().__init__(prog, **{"width": columns() - 2, **kw})


def columns() -> int:
    try:
        n = int(os.environ.get("COLUMNS", 0))
    except ValueError:
        n = 0
    if n <= 0:
        try:
            n = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            n = 0
    return n if n > 0 else 80


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
    p = sub.add_parser(name, epilog=EPILOG, formatter_class=Formatter, **kw)
    config.add_arguments(p, suppress=True)
    return p


def add_budget_option(p) -> None:
    p.add_argument("--symbolize-budget", type=float, default=DEFAULT_BUDGET, metavar="SECONDS",
                   help="time for symbolization (debug files, debuginfod) per report; frames "
                   f"not reached keep what the unwinder found (default {DEFAULT_BUDGET:g}; "
                   "0 turns symbolization off)")


def add_unwind_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("json", "text"), default="json")
    p.add_argument("--max-frames", type=positive, default=None, metavar="N",
                   help="frames per thread at most (default: to the end of the stack)")
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


def when(text: str) -> float:
    """A point in time as journalctl takes it: '2026-12-01 10:00[:00]',
    '2026-12-01', 'today', 'yesterday', 'now', '1h ago', '@EPOCH'."""
    import datetime
    t = text.strip().lower()
    now = datetime.datetime.now().astimezone()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    words = {"now": now, "today": midnight, "yesterday": midnight - datetime.timedelta(days=1),
             "tomorrow": midnight + datetime.timedelta(days=1)}
    if t in words:
        return words[t].timestamp()
    if t.startswith("@"):
        try:
            return float(t[1:])
        except ValueError:
            pass
    if t.endswith(" ago") or t.startswith("-"):
        try:
            return now.timestamp() - config.parse_duration(t.removesuffix(" ago").lstrip("-"))
        except ValueError:
            pass
    try:
        parsed = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (e.g. '2026-12-01 10:00', today, '1h ago')") from None
    return (parsed if parsed.tzinfo else parsed.astimezone()).timestamp()


MATCH_FIELDS = ("pid", "exe", "name", "fingerprint", "unit", "signal", "uid")


def match(text: str) -> tuple[str, str]:
    """A match as coredumpctl takes it: a PID, an executable path, a
    command name, or FIELD=VALUE."""
    field, eq, value = text.partition("=")
    if eq:
        if field not in MATCH_FIELDS:
            raise argparse.ArgumentTypeError(
                f"unknown field {field!r} (known: {', '.join(MATCH_FIELDS)})")
        return field, value
    if text.isdigit():
        return "pid", text
    return ("exe", text) if "/" in text else ("name", text)


def add_match_options(p) -> None:
    p.add_argument("match", nargs="*", type=match, metavar="MATCH",
                   help="PID, executable path, command name, or FIELD=VALUE "
                   "(fingerprint=, unit=, signal=, uid=, exe=, name=, pid=)")
    p.add_argument("-S", "--since", type=when, metavar="TIME",
                   help="reports at or after TIME ('2026-12-01 10:00', today, '1h ago')")
    p.add_argument("-U", "--until", type=when, metavar="TIME", help="reports at or before TIME")
    p.add_argument("--all", action="store_true", help="attach snapshots too")
    p.add_argument("--json", action="store_true", help="JSON rather than text")
    p.add_argument("--journal", action="store_true",
                   help="read the reports the journald sink wrote, from the journal (the "
                   "default when [store] enabled = false)")
    p.add_argument("--namespace", metavar="NS", help="with --journal: journalctl's --namespace")
