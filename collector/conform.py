"""A report read from outside (`collector symbolize REPORT.json`) made safe
for the code that works on reports: every value whose type the schema
(schema/report-v1.json) refuses is dropped, and the report's errors say
which. Types, enums, constants and integer ranges are checked, where the
schema says them; a missing field is left missing (every reader of a report
takes an absent field), unknown fields are left alone.

Reading is bounded first: nesting deeper than MAX_DEPTH, NaN, Infinity or
a number too large for a float is not a report (BadReport).
"""
from __future__ import annotations

import functools
import json
import math
import os

from .errors import BadReport

SCHEMA = os.path.join(os.path.dirname(__file__), "schema", "report-v1.json")
MAX_DEPTH = 32     # a report nests 6 deep; json's own limit is the interpreter's stack
MAX_ERRORS = 20    # what was dropped, said at most this many times
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
          "integer": int, "number": (int, float)}


def loads(text: str) -> object:
    """JSON without NaN, Infinity or nesting beyond MAX_DEPTH (BadReport)."""
    try:
        value = json.loads(text, parse_constant=_refuse, parse_float=_finite)
    except RecursionError:
        raise BadReport("the report nests too deeply to be one") from None
    except ValueError as e:
        raise BadReport(f"not JSON: {e}") from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth >= MAX_DEPTH:
                    raise BadReport(f"the report nests deeper than {MAX_DEPTH} levels")
                stack.append((child, depth + 1))
    return value


def _refuse(constant: str):
    raise ValueError(f"{constant} is not a number a report holds")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large")
    return value


@functools.cache
def schema() -> dict:
    with open(SCHEMA) as f:
        return json.load(f)


def conform(report: dict) -> dict:
    """Drop from `report` (in place) what the schema's types refuse; its
    errors say what was dropped."""
    dropped: list[str] = []
    _walk(report, schema(), "report", dropped)
    errors = report.get("errors")
    if not isinstance(errors, list):
        errors = report["errors"] = []
    errors += [f"{path} is not {why}: dropped" for path, why in dropped[:MAX_ERRORS]]
    if len(dropped) > MAX_ERRORS:
        errors.append(f"{len(dropped) - MAX_ERRORS} more values of the wrong type dropped")
    return report


def _walk(value, node: dict, path: str, dropped: list) -> None:
    """`value` fits `node` already; check its children."""
    node = _branch(value, node)
    if isinstance(value, dict):
        props, extra = node.get("properties", {}), node.get("additionalProperties")
        for key in list(value):
            child = props.get(key, extra if isinstance(extra, dict) else None)
            if child is not None:
                _check(value, key, child, f"{path}.{key}", dropped)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        keep = []
        for i, item in enumerate(value):
            why = _misfit(item, node["items"])
            if why:
                dropped.append((f"{path}[{i}]", why))
            else:
                _walk(item, node["items"], f"{path}[{i}]", dropped)
                keep.append(item)
        value[:] = keep


def _check(container: dict, key, node: dict, path: str, dropped: list) -> None:
    why = _misfit(container[key], node)
    if why:
        dropped.append((path, why))
        del container[key]
    else:
        _walk(container[key], node, path, dropped)


def _resolve(node: dict) -> dict:
    ref = node.get("$ref")
    if ref is None:
        return node
    target = schema()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def _branch(value, node: dict) -> dict:
    """The node itself, or the anyOf alternative `value` fits."""
    node = _resolve(node)
    for alternative in node.get("anyOf", ()):
        if not _misfit(value, alternative):
            return _resolve(alternative)
    return node


def _misfit(value, node: dict) -> str | None:
    """Why `value` does not fit `node` itself (children aside), or None."""
    node = _resolve(node)
    if "anyOf" in node:
        whys = [_misfit(value, n) for n in node["anyOf"]]
        return None if None in whys else " or ".join(whys)
    if "const" in node and not _same(value, node["const"]):
        return f"{json.dumps(node['const'])}"
    if "enum" in node and not any(_same(value, v) for v in node["enum"]):
        return "one of " + ", ".join(map(json.dumps, node["enum"]))
    kinds = node.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            return " or ".join(f"an {k}" if k[0] in "aeiou" else f"a {k}" for k in kinds)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < node.get("minimum", value) or value > node.get("maximum", value):
            return f"in [{node.get('minimum', '')}, {node.get('maximum', '')}]"
    return None


def _is(value, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "boolean"
    return isinstance(value, _TYPES[kind])


def _same(a, b) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)
