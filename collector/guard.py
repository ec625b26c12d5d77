"""Every stage after capture (unwinding one thread, symbolization,
redaction, storm control, rendering) may fail on its own: `stage` runs one,
and a failure, a bug in us or input no check foresaw, becomes an entry in
the report's errors and the stage's fallback, so that the report goes on
with what was reached. The one place where a stage's exception is caught."""
from __future__ import annotations

import os
import sys


def stage(errors: list[str], what: str, fn, *args, fallback=None, detail: bool = True):
    """fn(*args); on an exception, `fallback` (called if callable) with
    "WHAT failed: TYPE: MESSAGE" added to `errors` (TYPE alone without
    `detail`: a message may quote the data, say a secret being redacted)."""
    try:
        return fn(*args)
    except Exception as e:
        errors.append(f"{what} failed: {type(e).__name__}" + (f": {e}" if detail else ""))
        if os.environ.get("COLLECTOR_DEBUG"):
            import traceback
            traceback.print_exc(file=sys.stderr)
        return fallback() if callable(fallback) else fallback
