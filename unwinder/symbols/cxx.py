"""C++ (Itanium ABI) names through the system's libstdc++ `__cxa_demangle`
(ctypes): the demangler gcc ships and elfutils calls, so names equal
eu-stack's, kept up to date by the distribution."""
from __future__ import annotations

import ctypes
import functools


@functools.cache
def _cxa_demangle():
    try:
        fn = ctypes.CDLL("libstdc++.so.6").__cxa_demangle  # the soname, stable since gcc 3.4
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.POINTER(ctypes.c_int)]
    return fn


_libc = ctypes.CDLL(None)
_libc.free.argtypes = [ctypes.c_void_p]


def demangle(name: str) -> str | None:
    """The readable name of an `_Z` symbol, or None (not one, or no libstdc++)."""
    fn = _cxa_demangle()
    if fn is None:
        return None
    status = ctypes.c_int(0)
    out = fn(name.encode(), None, None, ctypes.byref(status))
    if not out or status.value != 0:
        return None
    try:
        return ctypes.string_at(out).decode("utf-8", "replace")
    finally:
        _libc.free(out)
