"""The report for a human: one line per frame, like eu-stack and gdb, and
one line for a cycle of functions repeated MIN_REPEATS times or more (deep
recursion): `#5-#1983 recurse (x1979)`. Every string taken from the target
is escaped: a process cannot forge lines of the output."""
import datetime
import re

MAX_CYCLE = 8       # longest cycle of functions collapsed into one line
MIN_REPEATS = 3
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape(text) -> str:
    """A value taken from the target, printable on one line: control
    characters as \\xNN (ESC, CR and newline cannot forge output)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def info(report: dict) -> str:
    """The header `collector show` prints, in the shape of `coredumpctl info`."""
    p = report.get("process") or {}
    sig = report.get("signal") or {}
    fields = [("PID", f"{p.get('pid')} ({escape(p.get('name') or '?')})"),
              ("UID", p.get("uid")), ("GID", p.get("gid")),
              ("Signal", f"{sig.get('number')} ({sig.get('name')})" if sig else None),
              ("Timestamp", _local(report.get("time"))),
              ("Command Line", escape(" ".join(p.get("cmdline") or [])) or None),
              ("Executable", escape(p["exe"]) if p.get("exe") else None),
              ("Unit", escape(p["unit"]) if p.get("unit") else None),
              ("Source", report.get("source")),
              ("Hostname", (report.get("host") or {}).get("hostname")),
              ("Fingerprint", report.get("fingerprint")), ("Report ID", report.get("report_id"))]
    return "".join(f"{k:>14}: {v}\n" for k, v in fields if v is not None) + "\n"


def _local(iso) -> str | None:
    try:
        t = datetime.datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone().strftime("%a %Y-%m-%d %H:%M:%S %Z")


def render(report: dict) -> str:
    p = report["process"]
    lines = [f"PID {p['pid']} {p.get('exe') or p.get('name') or ''}".rstrip()]
    sig = report.get("signal")
    if sig:
        addr = f" at {sig['si_addr']:#x}" if sig.get("si_addr") is not None else ""
        lines.append(f"signal {sig.get('name') or sig.get('number')}{addr}")
    for t in report["threads"]:
        crashed = " (crashed)" if t.get("crashed") else ""
        lines.append(f"TID {t['tid']} \"{t['name'] or ''}\"{crashed}:")
        lines += _frames(t)
        lines.append(f"     stop: {t['stop_reason']}")
        if t.get("interpreter_error"):
            lines.append(f"     python: {escape(t['interpreter_error'])}")
    for e in report["errors"]:
        lines.append(f"error: {e}")
    return "\n".join(lines) + "\n"


def _frames(thread: dict) -> list[str]:
    frames = thread["frames"]
    gap = next((i for i, f in enumerate(frames) if f.get("elided_before")), len(frames))
    keys = [_name(f) for f in frames]
    lines, shift, i = [], 0, 0
    while i < len(frames):
        if i == gap:
            shift = frames[i]["elided_before"]
            lines.append(_gap_line(i, shift, thread.get("elided") or {}))
        limit = gap if i < gap else len(frames)
        period, repeats = _cycle_at(keys, i, limit)
        if repeats:
            end = i + period * repeats
            lines.append(f"#{i + shift}-#{end - 1 + shift} {' > '.join(keys[i:i + period])} "
                         f"(x{repeats})")
            i = end
            continue
        lines += _frame_lines(frames[i], i + shift)
        i += 1
    return lines


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
    cycle = elided.get("cycle") or []
    if not cycle:
        return where
    names = " > ".join(c.get("function") or f"{c['pc']:#x}" for c in cycle)
    rest = count - elided.get("cycle_frames", count)
    return f"{where}: {names} (x{elided.get('repeats')})" + \
        (f" and {rest} other frames" if rest else "")


def _name(f: dict) -> str:
    return f["function"] or f"{f['pc']:#x}"


def _frame_lines(f: dict, depth: int) -> list[str]:
    if f["method"] == "interpreter":
        return [f"#{depth:<3} {_python(f)}"]
    where = f["function"] or "??"
    if f["function"] and f["offset"]:
        where += f"+{f['offset']:#x}"
    module = f" ({f['module']})" if f["module"] else ""
    method = "" if f["method"] in ("context", "cfi") else f" [{f['method']}]"
    inlined = " [inlined]" if f.get("inlined") else ""
    lines = [f"#{depth:<3} {f['pc']:#018x} {where}{module}{method}{inlined}"]
    if f.get("file"):
        column = f":{f['column']}" if f.get("column") else ""
        lines.append(f"     {f['file']}:{f.get('line') or '?'}{column}")
    return lines


def _python(f: dict) -> str:
    """As Python's own traceback says it."""
    file, function = (escape(f.get(k) or "?") for k in ("file", "function"))
    return f'File "{file}", line {f.get("line") or "?"}, in {function}'
