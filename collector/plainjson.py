"""JSON of plain values (dicts with string keys, lists, strings, numbers,
booleans, null) through json's own C parts: the json module brings re,
enum and more, milliseconds that a client of the service or a pipe
handler's early decision cannot spare."""
from __future__ import annotations

import _json


def dumps(value) -> str:
    """JSON of `value` (TypeError for what is not a plain value)."""
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float) and value - value == 0:  # finite
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(dumps, value)) + "]"
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return "{" + ",".join(f"{dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not in a message: {type(value).__name__}")


class _Plain:
    """What json's C scanner asks of its decoder: plain values only."""
    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int

    @staticmethod
    def parse_constant(name: str):
        raise ValueError(f"{name} is not a message's value")


_scan = _json.make_scanner(_Plain())


def loads(body: bytes | bytearray):
    """The JSON value in `body`, or None if it holds no single one."""
    try:
        text = body.decode()
        value, end = _scan(text, len(text) - len(text.lstrip()))
    except (ValueError, RecursionError, StopIteration):
        return None
    return value if not text[end:].strip() else None
