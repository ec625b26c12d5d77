"""The crash service: cores the kernel hands over (pipe mode, and the
socket of `collector serve`), each turned into a report however it fails.

Where its control socket is, importable before anything else of it (no
socket or json: `attach` asks here before its first stop)."""
from __future__ import annotations

import os
import stat

CONTROL = "/run/collector/control.sock"
CONTROL_ENV = "COLLECTOR_CONTROL"


def control_path() -> str | None:
    """The control socket to use: $COLLECTOR_CONTROL if set (an empty value
    or a path with no socket means none), else the default one if it exists."""
    named = os.environ.get(CONTROL_ENV)
    where = CONTROL if named is None else named
    try:
        return where if where and stat.S_ISSOCK(os.stat(where).st_mode) else None
    except OSError:
        return None
