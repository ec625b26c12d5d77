"""The core the kernel hands to a core_pattern handler, on a pipe (`core
--from-kernel`) or on a socket (`serve`): a report for every core, even
after a bug in us.

Under the kernel the handler runs as root with no environment and no
stdout/stderr: the report goes to a file (--output, or a new file in
--report-dir) or to the configured sinks, and whatever goes wrong becomes an
error in that report. The handler itself reads only /proc/PID and opens the
mapped files; the core is read, unwound and symbolized by an unprivileged
worker (collector/worker.py), and what the worker could not do is said in
the report, which then has what /proc told the handler.
"""
from __future__ import annotations

import importlib
import os

from ..collect import failure_report, from_core_stream
from ..logging import log
from ..targets.crashed import Seen, look
from ..targets.stream import drain
from ..worker import Limits, identity, run

# What the worker imports after the fork (lazily elsewhere), imported before
# it, as root: the worker reads no code from disk, which its user may not
# even be able to (an interpreter under /root).
WORKER_MODULES = ("collector.symbolize", "unwinder.symbols.lines", "zstandard", "lzma",
                  "datetime", "json", "traceback")
# What storm control's early decision imports (service/early.py): in the
# service, before the fork, so a suppressed crash costs no import.
EARLY_MODULES = ("collector.delivery.storm", "collector.delivery.store", "sqlite3")
_REPORT_PARTS = {"process": dict, "threads": list, "modules": list, "timings": dict,
                 "errors": list, "host": dict}


def handle_kernel_core(fd: int, kernel: dict, errors: list[str], opts,
                       pidfd: int | None = None, head: bytes = b"") -> dict:
    """Always a report, symbolized (the outlet need not do it again), even
    after a bug in us (then with the error), and the input always drained.
    `head`: the core's first bytes, already read from `fd` (early.py)."""
    seen = None
    try:
        seen = look(kernel.get("P"), pidfd if pidfd is not None else kernel.get("F"))
        return analyse(fd, kernel, errors, opts, seen, head)
    except Exception as e:  # a bug in us: the report says so rather than nothing
        drain(fd, opts.idle_timeout)
        return failure_report(kernel, f"internal error: {type(e).__name__}: {e}", seen, errors)


def preload() -> None:
    for name in WORKER_MODULES + EARLY_MODULES:
        importlib.import_module(name)


def analyse(fd: int, kernel: dict, errors: list[str], opts, seen: Seen,
            head: bytes = b"") -> dict:
    """The report of the core on `fd`, made by a worker that has the
    crashing user's ids (from the kernel, else /proc) and no privileges."""
    preload()
    limits = Limits(**opts.worker)
    ident, why = identity(kernel.get("u", seen.live.get("uid")),
                          kernel.get("g", seen.live.get("gid")), limits.user)
    errors = errors + why

    def task(arrived) -> dict:
        # no debuginfod: the worker has nowhere to keep downloads that root's tools trust
        os.environ.pop("DEBUGINFOD_URLS", None)
        out = from_core_stream(fd, kernel, errors, opts, seen, opts.outlet.images, arrived, head)
        opts.outlet.symbolize(out)
        return out

    got = run(task, ident, limits, {fd, *seen.fds()})
    if not got.arrived:  # the kernel waits for the whole core, even if the worker died reading it
        drain(fd, opts.idle_timeout)
    log.debug("worker", pid=kernel.get("P"), worker_ms=got.ms, error=got.error,
              **{k.lower(): v for k, v in got.status.items()})
    out = got.result
    if out is None or any(not isinstance(out.get(k), t) for k, t in _REPORT_PARTS.items()):
        return failure_report(kernel, got.error or "the worker's answer was not a report",
                              seen, errors)
    out["process"].update(seen.live)  # what root read is not the worker's to say
    out["timings"]["worker_ms"] = got.ms
    return out
