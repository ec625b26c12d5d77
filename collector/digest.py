"""SHA-256 without hashlib: hashlib loads OpenSSL and makes every algorithm
it has, 3-6 ms of a cold report. CPython's own (3.11's _sha256, 3.12's
_sha2), hashlib's only where neither is built."""
try:
    from _sha256 import sha256
except ImportError:
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256

__all__ = ["sha256"]
