"""The otlp sink's small readers: the service name from a report's unit,
Retry-After in both forms, report times as Unix nanoseconds."""
from __future__ import annotations

import email.utils

from collector.delivery.sinks.otlp import service, unix_nano
from collector.delivery.sinks.post import retry_after
from collector.targets.procfs import cgroup_fields


def unit(path: str) -> str | None:
    return service(dict(cgroup_fields(f"0::{path}"), exe="/usr/bin/exe"))


def test_service_from_cgroup():
    assert unit("/system.slice/nginx.service") == "nginx.service"
    assert unit("/system.slice/getty@tty1.service") == "getty@tty1.service"
    assert unit("/system.slice/docker.service/payload") == "docker.service"
    # an app or a login session in a scope is not its user manager's service
    assert unit("/user.slice/user-1000.slice/user@1000.service/app.slice/"
                "app-org.gnome.Terminal.slice/vte-spawn-1.scope") == "exe"
    assert unit("/user.slice/user-1000.slice/user@1000.service/app.slice/"
                "foo.service") == "foo.service"
    assert unit("/user.slice/user-1000.slice/session-3.scope") == "exe"
    assert unit("/") == "exe" and service({}) is None


def test_retry_after_seconds_and_http_date():
    assert retry_after("7") == 7.0 and retry_after(" 0 ") == 0.0
    now = 1_700_000_000.0
    assert retry_after(email.utils.formatdate(now + 90, usegmt=True), now) == 90.0
    assert retry_after(email.utils.formatdate(now - 90, usegmt=True), now) == 0.0
    assert retry_after(None) is None and retry_after("soon") is None and retry_after("-3") is None


def test_unix_nano_exact():
    assert unix_nano("2024-05-01T12:00:00.123456Z") == "1714564800123456000"
    assert unix_nano("1970-01-01T00:00:00Z") == "0"
    assert unix_nano(None) is None and unix_nano("yesterday") is None
