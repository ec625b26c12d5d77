"""The report for a human: one line per frame, like eu-stack and gdb, and
one line for a cycle of functions repeated MIN_REPEATS times or more (deep
recursion): `#5-#1983 recurse (x1979)`.

Every string in a report may come from the target (its name, thread names,
paths, arguments, symbol and file names): each is printed escaped, so that
no control character (ESC, BEL, CR, a newline) reaches the terminal and no
process can forge a line of the output. A field that is absent, or not of
its type (a report given to `collector symbolize`), prints as nothing or `?`.
"""
from __future__ import annotations

import collections
import datetime
import os

MAX_CYCLE = 8       # longest cycle of functions collapsed into one line
MIN_REPEATS = 3
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


class Style(collections.namedtuple("Style", "colour width", defaults=(False, None))):
    """How a terminal wants it: colours (ANSI SGR), and lines cut to `width`.
    (Not a dataclass: that import costs ~10 ms on the way out of a report.)"""
    __slots__ = ()

    @classmethod
    def of(cls, stream) -> Style:
        """Plain text unless `stream` is a terminal; no colours under NO_COLOR
        (https://no-color.org) or TERM=dumb."""
        if not stream.isatty():
            return cls()
        import shutil  # only for a terminal: it imports bz2 and lzma
        colour = "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        return cls(colour, shutil.get_terminal_size().columns)

    def paint(self, text: str, what: str) -> str:
        return f"\x1b[{_SGR[what]}m{text}\x1b[0m" if self.colour and text else text


PLAIN = Style()
_SGR = {"function": "1", "module": "2", "guess": "33", "crashed": "1;31", "signal": "1;31",
        "error": "33", "python": "36", "heading": "1"}


def fit(left: str, where: str, module: str, width: int | None) -> tuple[str, str]:
    """`where` and `module` cut so that the line fits `width`: the module's
    directories first (its file name stays), then the end of the name."""
    if width is None or len(left) + len(where) + len(module) <= width:
        return where, module
    if module:
        name = module.rsplit("/", 1)[-1]
        module = f"…/{name}" if "/" in module else module
    room = width - len(left) - len(module)
    if len(where) > room:
        where = where[:max(room - 1, 8)] + "…"
    return where, module


def info(report: dict) -> str:
    """The header `collector show` prints, in the shape of `coredumpctl info`."""
    p = _dict(report.get("process"))
    sig = _dict(report.get("signal"))
    fields = [("PID", f"{clean(p.get('pid'))} ({clean(p.get('name') or '?')})"),
              ("UID", p.get("uid")), ("GID", p.get("gid")),
              ("Signal", f"{clean(sig.get('number'))} ({clean(sig.get('name'))})" if sig else None),
              ("Timestamp", _local(report.get("time"))),
              ("Command Line", " ".join(map(clean, p.get("cmdline") or [])) or None),
              ("Executable", p.get("exe")), ("Unit", p.get("unit")),
              ("Source", report.get("source")),
              ("Hostname", _dict(report.get("host")).get("hostname")),
              ("Fingerprint", report.get("fingerprint")), ("Report ID", report.get("report_id"))]
    return "".join(f"{k:>14}: {clean(v)}\n" for k, v in fields if v is not None) + "\n"


def _local(iso) -> str | None:
    try:
        t = datetime.datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone().strftime("%a %Y-%m-%d %H:%M:%S %Z")


def render(report: dict, style: Style = PLAIN) -> str:
    p = _dict(report.get("process"))
    head = f"PID {clean(p.get('pid'))} {clean(p.get('exe') or p.get('name'))}".rstrip()
    lines = [style.paint(head, "heading")]
    sig = report.get("signal")
    if isinstance(sig, dict):
        addr = f" at {_hex(sig['si_addr'])}" if sig.get("si_addr") is not None else ""
        lines.append(style.paint(f"signal {clean(sig.get('name') or sig.get('number'))}{addr}",
                                 "signal"))
    for t in _dicts(report.get("threads")):
        crashed = style.paint(" (crashed)", "crashed") if t.get("crashed") is True else ""
        lines.append(f"TID {clean(t.get('tid'))} \"{clean(t.get('name'))}\"{crashed}:")
        lines += _frames(t, style)
        lines.append(f"     stop: {clean(t.get('stop_reason'))}")
        if t.get("interpreter_error"):
            lines.append(f"     python: {clean(t['interpreter_error'])}")
    errors = report.get("errors")
    for e in errors if isinstance(errors, list) else []:
        lines.append(style.paint(f"error: {clean(e)}", "error"))
    return "\n".join(lines) + "\n"


def _frames(thread: dict, style: Style = PLAIN) -> list[str]:
    frames = _dicts(thread.get("frames"))
    gap = next((i for i, f in enumerate(frames) if _count(f.get("elided_before"))),
               len(frames))
    keys = [_name(f) for f in frames]
    lines, shift, i = [], 0, 0
    while i < len(frames):
        if i == gap:
            shift = _count(frames[i]["elided_before"])
            lines.append(_gap_line(i, shift, _dict(thread.get("elided"))))
        limit = gap if i < gap else len(frames)
        period, repeats = _cycle_at(keys, i, limit)
        if repeats:
            end = i + period * repeats
            lines.append(f"#{i + shift}-#{end - 1 + shift} {' > '.join(keys[i:i + period])} "
                         f"(x{repeats})")
            i = end
            continue
        lines += _frame(frames[i], i + shift, style)
        i += 1
    return lines


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _cycle_at(keys: list[str], i: int, limit: int) -> tuple[int, int]:
    """(period, repeats) of the cycle covering most frames from i, repeated
    MIN_REPEATS times or more before `limit`, else (0, 0)."""
    best = (0, 0)
    for period in range(1, MAX_CYCLE + 1):
        cycle = keys[i:i + period]
        if i + period * MIN_REPEATS > limit:
            break
        repeats = 1
        while i + (repeats + 1) * period <= limit and \
                keys[i + repeats * period:i + (repeats + 1) * period] == cycle:
            repeats += 1
        if repeats >= MIN_REPEATS and period * repeats > best[0] * best[1]:
            best = (period, repeats)
    return best


def _gap_line(at: int, count: int, elided: dict) -> str:
    where = f"#{at}-#{at + count - 1} {count} frames left out"
    cycle = _dicts(elided.get("cycle"))
    if not cycle:
        return where
    names = " > ".join(clean(c.get("function")) or _hex(c.get("pc")) for c in cycle)
    rest = count - _count(elided.get("cycle_frames")) if elided.get("cycle_frames") else 0
    return f"{where}: {names} (x{clean(elided.get('repeats'))})" + \
        (f" and {rest} other frames" if rest else "")


def _name(f: dict) -> str:
    return clean(f.get("function")) or _hex(f.get("pc"))


def _frame(f: dict, depth: int, style: Style = PLAIN) -> list[str]:
    if f.get("method") == "interpreter":
        return [f"#{depth:<3} {style.paint(_python(f), 'python')}"]
    where = clean(f.get("function")) or "??"
    if f.get("function") and f.get("offset"):
        where += f"+{_hex(f['offset'])}"
    module = clean(f["module"]) if f.get("module") else ""
    method = "" if f.get("method") in (None, "context", "cfi") else f" [{clean(f['method'])}]"
    inlined = " [inlined]" if f.get("inlined") is True else ""
    left = f"#{depth:<3} {_hex(f.get('pc'), 18)} "
    where, module = fit(left + method + inlined + (" ()" if module else ""), where, module,
                        style.width)
    module = f" ({style.paint(module, 'module')})" if module else ""
    out = [f"{left}{style.paint(where, 'function')}{module}"
           f"{style.paint(method, 'guess')}{inlined}"]
    if f.get("file"):
        column = f":{clean(f['column'])}" if f.get("column") else ""
        out.append(f"     {clean(f['file'])}:{clean(f.get('line') or '?')}{column}")
    return out


def _python(f: dict) -> str:
    """As Python's own traceback says it."""
    file, function = (clean(f.get(k)) or "?" for k in ("file", "function"))
    return f'File "{file}", line {clean(f.get("line") or "?")}, in {function}'
