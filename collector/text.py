"""The report for a human: one line per frame, like eu-stack and gdb."""


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
    for e in report["errors"]:
        lines.append(f"error: {e}")
    return "\n".join(lines) + "\n"
