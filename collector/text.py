"""The report for a human: one line per frame, like eu-stack and gdb.

Every string in a report may come from the target (its name, thread names,
paths, arguments, symbol and file names): each is printed escaped, so that
no control character (ESC, BEL, CR, a newline) reaches the terminal and no
process can forge a line of the output. A field that is absent, or not of
its type (a report given to `collector symbolize`), prints as nothing or `?`.
"""
from __future__ import annotations

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def clean(value) -> str:
    """`value` as printable text: control and other non-printing
    characters (Unicode categories C and Z but the space) as escapes."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c == " " or (c.isprintable() and c != "\\") else _escape(c)
                   for c in text)


def _escape(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    n = ord(c)
    if 0xdc80 <= n <= 0xdcff:  # a byte that was not UTF-8 in a name (surrogateescape)
        return f"\\x{n - 0xdc00:02x}"
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _hex(value, width: int = 0) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:#0{width}x}" if width else f"{value:#x}"
    return "?"


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _dicts(value) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def render(report: dict) -> str:
    p = _dict(report.get("process"))
    lines = [f"PID {clean(p.get('pid'))} {clean(p.get('exe') or p.get('name'))}".rstrip()]
    sig = report.get("signal")
    if isinstance(sig, dict):
        addr = f" at {_hex(sig['si_addr'])}" if sig.get("si_addr") is not None else ""
        lines.append(f"signal {clean(sig.get('name') or sig.get('number'))}{addr}")
    for t in _dicts(report.get("threads")):
        crashed = " (crashed)" if t.get("crashed") is True else ""
        lines.append(f"TID {clean(t.get('tid'))} \"{clean(t.get('name'))}\"{crashed}:")
        for f in _dicts(t.get("frames")):
            lines += _frame(f)
        lines.append(f"     stop: {clean(t.get('stop_reason'))}")
    errors = report.get("errors")
    for e in errors if isinstance(errors, list) else []:
        lines.append(f"error: {clean(e)}")
    return "\n".join(lines) + "\n"


def _frame(f: dict) -> list[str]:
    where = clean(f.get("function")) or "??"
    if f.get("function") and f.get("offset"):
        where += f"+{_hex(f['offset'])}"
    module = f" ({clean(f['module'])})" if f.get("module") else ""
    method = "" if f.get("method") in (None, "context", "cfi") else f" [{clean(f['method'])}]"
    inlined = " [inlined]" if f.get("inlined") is True else ""
    out = [f"#{clean(f.get('index')):<3} {_hex(f.get('pc'), 18)} {where}{module}{method}{inlined}"]
    if f.get("file"):
        column = f":{clean(f['column'])}" if f.get("column") else ""
        out.append(f"     {clean(f['file'])}:{clean(f.get('line') or '?')}{column}")
    return out
