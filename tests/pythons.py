"""The CPython interpreters the Python-frame tests run: pyenv's 3.8-3.13
(`~/.pyenv/versions`, or $PYENV_ROOT) and Debian's /usr/bin/python3, each a
pytest param that is None (skip) where absent."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
MINORS = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"]


def pyenv(minor: str) -> str | None:
    for d in sorted(PYENV.glob(f"{minor}.*")) if PYENV.is_dir() else []:
        exe = d / "bin" / f"python{minor}"
        if re.fullmatch(rf"{re.escape(minor)}\.\d+", d.name) and exe.exists():
            return str(exe)
    return None


def interpreters(debian: bool = True) -> list:
    out = [pytest.param(pyenv(m), id=f"pyenv-{m}") for m in MINORS]
    if debian:
        out.append(pytest.param("/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                                else None, id="debian-python3"))
    return out
