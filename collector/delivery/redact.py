"""What a report may say about a process's secrets: no environment variable
unless allowed, never one whose name looks secret, command-line arguments
masked by pattern. Applied to every report before any sink or the spool sees
it, and (as a structlog processor) to the collector's own diagnostics."""
from __future__ import annotations

import fnmatch
import re

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL|AUTH|PRIVATE", re.I)
MASK = "<redacted>"


class Policy:
    """A plain class: dataclasses (and inspect) cost ~10 ms to import, on
    the way out of every report."""

    def __init__(self, environment: tuple[str, ...] = (), cmdline: tuple[re.Pattern, ...] = ()):
        self.environment = environment  # names or globs allowed through
        self.cmdline = cmdline

    @classmethod
    def from_config(cls, section: dict) -> "Policy":
        return cls(tuple(section["environment"]), tuple(map(re.compile, section["cmdline"])))


def environment(env: dict | None, allow: tuple[str, ...]) -> dict:
    return {k: v for k, v in (env or {}).items()
            if not SECRET_NAME.search(k) and any(fnmatch.fnmatchcase(k, a) for a in allow)}


def argument(arg: str, patterns: tuple[re.Pattern, ...]) -> str:
    """Each match is masked: only its `secret` group if it has one."""
    def mask(m: re.Match) -> str:
        if "secret" in m.re.groupindex and m.group("secret") is not None:
            s, e = m.span("secret")
            return m.group(0)[:s - m.start()] + MASK + m.group(0)[e - m.start():]
        return MASK
    for p in patterns:
        arg = p.sub(mask, arg)
    return arg


def apply(report: dict, policy: Policy) -> dict:
    if not report.get("process"):
        return report
    process = dict(report["process"])
    env = environment(process.pop("environ", None), policy.environment)
    if env:
        process["environ"] = env
    process["cmdline"] = [argument(a, policy.cmdline) for a in process.get("cmdline") or []]
    return {**report, "process": process}


def without_secrets(report: dict) -> dict:
    """The report when the policy could not be applied to it: without the
    environment and the command line, and saying so."""
    process = report.get("process")
    process = {k: v for k, v in process.items() if k not in ("environ", "cmdline")} \
        if isinstance(process, dict) else {}
    return {**report, "process": {**process, "cmdline": []},
            "errors": [*report.get("errors", []), "the environment and command line are left "
                       "out: they could not be redacted"]}


def scrub_event(_logger, _method, event: dict) -> dict:
    """structlog processor: a diagnostic never carries a secret-named value."""
    return {k: MASK if SECRET_NAME.search(k) else v for k, v in event.items()}
