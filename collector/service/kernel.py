"""The core the kernel hands to a core_pattern handler, on a pipe (`core
--from-kernel`) or on a socket (`serve`): the handler's arguments, and a
report for every core, even after a bug in us.

Under the kernel the handler runs as root with no environment and no
stdout/stderr: the report goes to a file (--output, or a new file in
--report-dir) or to the configured sinks, and whatever goes wrong becomes an
error in that report.
"""
from __future__ import annotations

from ..collect import failure_report, from_core_stream
from ..targets.stream import drain

# The core_pattern specifiers the handler takes, as LETTER=VALUE arguments
# (core_pattern is at most 127 bytes, and a LETTER=VALUE list still parses
# when a kernel leaves a specifier out).
KERNEL_ARGS = "P=%P I=%I s=%s t=%t u=%u g=%g h=%h F=%F e=%e"
_NUMERIC = set("PpIisugtF")


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


def handle_kernel_core(fd: int, kernel: dict, errors: list[str], opts,
                       pidfd: int | None = None) -> dict:
    """Always a report, even after a bug in us (then with the error), and
    the input always drained."""
    try:
        return from_core_stream(fd, kernel, errors, opts, pidfd, opts.outlet.images)
    except Exception as e:  # a bug in us: the report says so rather than nothing
        drain(fd)
        return failure_report(kernel, f"internal error: {type(e).__name__}: {e}")
