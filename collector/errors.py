"""The collector's errors. Messages say what to do; only the CLI turns them
into exit codes (documented in README.md and `collector --help`)."""


class CollectorError(Exception):
    exit_code = 1


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


EXIT_CODES = [
    (0, "success"),
    (1, "internal error (a bug: please report it)"),
    (2, "usage error"),
    (NoSuchProcess.exit_code, "no such process"),
    (NotPermitted.exit_code, "not permitted to trace the process"),
    (Zombie.exit_code, "the process is a zombie"),
    (KernelThread.exit_code, "the pid is a kernel thread"),
    (OwnProcess.exit_code, "the pid is the collector itself"),
    (ExitedDuringAttach.exit_code, "the process exited while being attached"),
    (TimedOut.exit_code, "the process could not be stopped in time"),
]
