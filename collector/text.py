"""The report for a human: one line per frame, like eu-stack and gdb."""
import datetime
import re

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
        for f in t["frames"]:
            if f["method"] == "interpreter":
                lines.append(f"#{f['index']:<3} {_python(f)}")
                continue
            where = f["function"] or "??"
            if f["function"] and f["offset"]:
                where += f"+{f['offset']:#x}"
            module = f" ({f['module']})" if f["module"] else ""
            method = "" if f["method"] in ("context", "cfi") else f" [{f['method']}]"
            inlined = " [inlined]" if f.get("inlined") else ""
            lines.append(f"#{f['index']:<3} {f['pc']:#018x} {where}{module}{method}{inlined}")
            if f.get("file"):
                column = f":{f['column']}" if f.get("column") else ""
                lines.append(f"     {f['file']}:{f.get('line') or '?'}{column}")
        lines.append(f"     stop: {t['stop_reason']}")
        if t.get("interpreter_error"):
            lines.append(f"     python: {t['interpreter_error']}")
    for e in report["errors"]:
        lines.append(f"error: {e}")
    return "\n".join(lines) + "\n"


def _python(f: dict) -> str:
    """As Python's own traceback says it; the target's strings made printable."""
    file, function = (_printable(f.get(k) or "?") for k in ("file", "function"))
    return f'File "{file}", line {f.get("line") or "?"}, in {function}'


def _printable(s: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
