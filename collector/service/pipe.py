"""Pipe mode's first step (core_pattern '|collector core --from-kernel'),
before anything heavy is imported (no engine, pyelftools or structlog:
about the cost of Python's own start-up):
- when the resident service runs, the core (stdin) and the kernel's pidfd
  are handed to it (service/control.py), and the handler is done;
- else storm control decides from the core's first notes on stdin. A
  suppressed crash's pipe is closed at once, so the kernel stops writing
  its core and the handler is gone in a few ms, well inside
  core_pipe_limit; an admitted one goes on through the `core` command,
  which gets the decision and the bytes read for it (`taken`).
Also the handler's arguments: core_pattern's specifiers as LETTER=VALUE."""
from __future__ import annotations

import os

# The core_pattern specifiers the handler takes, as LETTER=VALUE arguments
# (core_pattern is at most 127 bytes, and a LETTER=VALUE list still parses
# when a kernel leaves a specifier out).
KERNEL_ARGS = "P=%P I=%I s=%s t=%t u=%u g=%g h=%h F=%F e=%e"
_NUMERIC = set("PpIisugtF")

# (decision or None, the core's bytes read for it), for the `core` command
taken: tuple | None = None


def kernel_args(items: list[str]) -> tuple[dict, list[str]]:
    """{'P': 1234, 'e': 'name', ...} from LETTER=VALUE arguments."""
    out: dict = {}
    errors = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or len(key) != 1:
            errors.append(f"ignored handler argument {item!r} (expected LETTER=VALUE)")
        elif value == "":
            continue  # a specifier this kernel does not know expands to nothing
        elif key in _NUMERIC:
            try:
                out[key] = int(value)
            except ValueError:
                errors.append(f"ignored handler argument {item!r} (not a number)")
        else:
            out[key] = value
    return out, errors


def suppressed(argv: list[str]) -> bool:
    """True if this is pipe mode and all is done: the service took the
    core, or storm control suppressed the crash; else the command runs as
    usual. Whatever goes wrong here leaves the work to the command (a bad
    configuration, say, is then reported as such)."""
    global taken
    if "core" not in argv or "--from-kernel" not in argv:
        return False
    from ..streams import std_streams
    std_streams()
    from .control import hand_off
    specs = [a for a in argv if len(a) > 1 and a[1] == "=" and a[0].isalpha()]
    if hand_off(*kernel_args(specs)):
        return True
    opts = _options(argv)
    from .. import config
    from ..errors import ConfigError
    try:
        cfg = config.load(opts["--config"], tuple(opts["--set"]))
        timeout = float(opts["--idle-timeout"])
    except (ConfigError, ValueError):
        return False
    taken = look(0, cfg, timeout)
    decision = taken[0]
    if decision is None or decision.admitted:
        return False
    drop(decision, cfg["log"], opts["--log-level"])
    return True


def look(fd: int, cfg, timeout: float) -> tuple:
    from . import early
    key, head = early.from_notes(fd, timeout)
    return early.decide(cfg, key), head


def drop(decision, log_settings: dict, level: str | None = None) -> None:
    """Close the core's pipe (the kernel stops writing) and say so (at
    --log-level info: structlog is not worth loading otherwise)."""
    os.close(0)
    from .. import logging
    level = level or log_settings["level"]
    if logging.LEVELS.get(level, 30) <= logging.LEVELS["info"]:
        logging.setup(level, log_settings["target"])
        logging.log.info("crash suppressed before the analysis", key=str(decision.key))


def _options(argv: list[str]) -> dict:
    """The few options this step needs, as `--name VALUE` or `--name=VALUE`."""
    out = {"--config": None, "--set": [], "--idle-timeout": "30", "--log-level": None}
    for i, a in enumerate(argv):
        name, eq, value = a.partition("=")
        if name in out:
            if not eq:
                value = argv[i + 1] if i + 1 < len(argv) else ""
            if name == "--set":
                out[name].append(value)
            else:
                out[name] = value
    return out
