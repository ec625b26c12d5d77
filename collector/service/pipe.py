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
# Where the entry script install-handler writes has this step keep the
# configuration's sections it needs (None: parsed every time). Reading
# them back costs a marshal.load; parsing costs tomllib and re, ~9 ms.
settings_at: str | None = None
SECTIONS = ("collector", "storm", "store", "log")


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
    cfg = settings(opts)
    try:
        timeout = float(opts["--idle-timeout"])
    except ValueError:
        return False
    if cfg is None:
        return False
    taken = look(0, cfg, timeout, then=lambda: os.close(0))
    decision = taken[0]
    if decision is None or decision.admitted:
        return False
    say(decision, cfg["log"], opts["--log-level"])
    return True


def settings(opts: dict) -> dict | None:
    """The configuration's SECTIONS: kept at `settings_at` with what they
    were made of (the file's bytes, the COLLECTOR_ environment, --config,
    --set, and the configuration code itself), and read back while all of
    that is unchanged; else loaded (None if the configuration is bad)."""
    import marshal
    where = settings_at
    try:
        made_of = (opts["--config"], opts["--set"], _code(),
                   sorted((k, v) for k, v in os.environ.items() if k.startswith("COLLECTOR_")))
    except OSError:
        where = None
    if where is not None:
        try:
            with open(where, "rb") as f:
                kept, path, text, sections = marshal.load(f)
            if kept == made_of and _read(path) == text:
                return sections
        except (OSError, EOFError, ValueError, TypeError):
            pass  # none kept yet, or not one of ours: load it
    from .. import config
    from ..errors import ConfigError
    path = opts["--config"] or os.environ.get("COLLECTOR_CONFIG") or config.DEFAULT_PATH
    try:
        text = _read(path)  # before the load: a file changed meanwhile is only a miss later
    except OSError:
        where = None
    try:
        cfg = config.load(opts["--config"], tuple(opts["--set"]))
    except ConfigError:
        return None
    sections = {name: cfg[name] for name in SECTIONS}
    if where is not None:
        from ..files import write_atomic
        try:
            write_atomic(where, marshal.dumps((made_of, path, text, sections)))
        except (OSError, ValueError):
            pass  # the next handler loads it again
    return sections


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _code() -> tuple:
    """What says the configuration's code (its keys and defaults) changed."""
    st = os.stat(os.path.join(os.path.dirname(os.path.dirname(__file__)), "config.py"))
    return st.st_ino, st.st_size, st.st_mtime_ns


def look(fd: int, cfg, timeout: float, then=None, head: bytes = b"") -> tuple:
    """(storm control's decision or None, the bytes read for it, `head`
    included: what an earlier look took); `then`: what to do first for a
    suppressed crash (early.decide)."""
    from . import early
    key, head = early.from_notes(fd, timeout, head)
    return early.decide(cfg, key, then=then), head


def drop(decision, log_settings: dict, level: str | None = None) -> None:
    """Close the core's pipe (the kernel stops writing) and say so."""
    os.close(0)
    say(decision, log_settings, level)


def say(decision, log_settings: dict, level: str | None = None) -> None:
    """Log the suppressed crash at --log-level info (structlog is not worth
    loading otherwise)."""
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
