"""Symbol names a developer can read: Rust (legacy and v0, ours: rust.py)
and C++ (Itanium ABI, libstdc++'s own demangler: cxx.py)."""
from __future__ import annotations

import functools

from . import cxx, rust

MAX_NAME = 4096   # longer names are left mangled


@functools.lru_cache(maxsize=4096)  # a report names the same few functions on every thread
def demangle(name: str) -> str | None:
    """The readable name, or None when `name` is not a mangled name we read."""
    if not name or len(name) > MAX_NAME:
        return None
    base, _, version = name.partition("@")  # keep a symbol version: foo@@GLIBC_2.2.5
    suffix = "@" + version if version else ""
    try:
        # a legacy Rust name is also a C++ one: Rust first
        out = rust.demangle(base)
        if out is None and base.startswith("_Z"):
            out = cxx.demangle(base)
    except (rust.Invalid, RecursionError, UnicodeError, ValueError, IndexError):
        return None
    return out + suffix if out else None
