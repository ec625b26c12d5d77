"""The collector's errors. Messages say what to do; only the CLI turns them
into exit codes (documented in README.md and `collector --help`)."""


class CollectorError(Exception):
    exit_code = 1


class UsageError(CollectorError):
    exit_code = 2


class NoSuchProcess(CollectorError):
    exit_code = 3


class NotPermitted(CollectorError):
    exit_code = 4


class Zombie(CollectorError):
    exit_code = 5


class KernelThread(CollectorError):
    exit_code = 6


class OwnProcess(CollectorError):
    exit_code = 7


class ExitedDuringAttach(CollectorError):
    exit_code = 8


class TimedOut(CollectorError):
    exit_code = 9


class BadCore(CollectorError):
    exit_code = 10


class HandlerError(CollectorError):
    exit_code = 11


class ConfigError(CollectorError):
    exit_code = 12


class NotDelivered(CollectorError):
    exit_code = 13


class FlushIncomplete(CollectorError):
    exit_code = 14


class NoMatch(CollectorError):
    """list/show: no stored report matches (exit 1, as coredumpctl)."""
    exit_code = 1


class StoreUnavailable(CollectorError):
    exit_code = 15


class BadReport(UsageError):
    """`collector symbolize` was given something that is not a report."""


class CannotRun(CollectorError):
    exit_code = 127  # as a shell says of a program it cannot execute


INTERRUPTED = 130  # SIGINT, as a shell says of a program it ended

EXIT_CODES = [
    (0, "success"),
    (1, "internal error (a bug: please report it); list, show: no report matches"),
    (2, "usage error"),
    (NoSuchProcess.exit_code, "no such process"),
    (NotPermitted.exit_code, "not permitted to trace the process"),
    (Zombie.exit_code, "the process is a zombie"),
    (KernelThread.exit_code, "the pid is a kernel thread"),
    (OwnProcess.exit_code, "the pid is the collector itself"),
    (ExitedDuringAttach.exit_code, "the process exited while being attached"),
    (TimedOut.exit_code, "the process could not be stopped in time"),
    (BadCore.exit_code, "not an x86-64 ELF core file (or it cannot be read)"),
    (HandlerError.exit_code, "the crash handler cannot be installed or served"),
    (ConfigError.exit_code, "invalid configuration (the message names the file, line and key)"),
    (NotDelivered.exit_code, "a report reached no sink and could not be spooled either"),
    (FlushIncomplete.exit_code, "spooled reports could not all be delivered (they stay spooled)"),
    (StoreUnavailable.exit_code, "list, show: the report store cannot be read"),
    (CannotRun.exit_code, "run: the program cannot be executed"),
    (INTERRUPTED, "interrupted (SIGINT); anything held or traced was released first"),
    ("128+N", "run: the program was killed by signal N; or the collector got signal N "
     "(SIGTERM 143, SIGINT 130), released the program and left it running"),
]
