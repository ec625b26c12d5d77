"""The collector's own diagnostics (never reports): structlog, one JSON
object per line on stderr, or native entries in the journal. Quiet
(warnings and errors) until the configuration says otherwise."""
from __future__ import annotations

import sys

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
PRIORITY = {"debug": "7", "info": "6", "warning": "4", "error": "3", "critical": "2"}
JOURNAL_SOCKET = "/run/systemd/journal/socket"


class JournalLogger:
    """structlog logger that sends field lists to journald, falling back to
    stderr when there is no journal."""

    def msg(self, pairs: list[tuple[str, str]]) -> None:
        import json

        from .journal import send_fields
        try:
            send_fields(JOURNAL_SOCKET, pairs)
        except OSError:
            sys.stderr.write(json.dumps(dict(pairs)) + "\n")

    debug = info = warning = error = critical = msg


def journal_fields(_logger, method: str, event: dict):
    import re  # here: the pipe handler imports this module before its decision
    pairs = [("MESSAGE", str(event.pop("event", ""))), ("PRIORITY", PRIORITY.get(method, "6")),
             ("SYSLOG_IDENTIFIER", "collector")]
    pairs += [("COLLECTOR_" + re.sub(r"[^A-Z0-9_]", "_", k.upper()), str(v))
              for k, v in event.items()]
    return (pairs,), {}


_settings = {"level": "warning", "target": "stderr"}


def setup(level: str = "warning", target: str = "stderr") -> None:
    """Record the settings; structlog is configured on the first message
    (importing it costs more than a quiet run of the collector takes)."""
    _settings.update(level=level, target=target)
    log.logger = None


def _configure():
    import structlog

    from .delivery.redact import scrub_event
    processors = [structlog.processors.add_log_level,
                  structlog.processors.TimeStamper(fmt="iso", utc=True), scrub_event]
    if _settings["target"] == "journal":
        processors.append(journal_fields)
        factory = lambda *args: JournalLogger()  # noqa: E731
    else:
        processors.append(structlog.processors.JSONRenderer())
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(processors=processors, logger_factory=factory,
                        wrapper_class=structlog.make_filtering_bound_logger(
                            LEVELS[_settings["level"]]),
                        cache_logger_on_first_use=False)
    return structlog.get_logger("collector")


def _quiet(*_args, **_kwargs) -> None:
    pass


class _Log:
    """The collector's logger, set up when first used."""
    logger = None

    def __getattr__(self, name):
        if LEVELS.get(name, 100) < LEVELS[_settings["level"]]:
            return _quiet  # filtered out: no reason to load structlog (~25 ms)
        if self.logger is None:
            self.logger = _configure()
        return getattr(self.logger, name)


log = _Log()
