"""The otlp sink's small readers: the systemd service from a cgroup path,
Retry-After in both forms, report times as Unix nanoseconds."""
from __future__ import annotations

import email.utils

from collector.delivery.sinks.otlp import unit, unix_nano
from collector.delivery.sinks.post import retry_after


def test_service_from_cgroup():
    assert unit("/system.slice/nginx.service") == "nginx.service"
    assert unit("/system.slice/getty@tty1.service") == "getty@tty1.service"
    assert unit("/system.slice/docker.service/payload") == "docker.service"
    # an app or a login session in a scope is not its user manager's service
    assert unit("/user.slice/user-1000.slice/user@1000.service/app.slice/"
                "app-org.gnome.Terminal.slice/vte-spawn-1.scope") is None
    assert unit("/user.slice/user-1000.slice/session-3.scope") is None
    assert unit("/") is None and unit("") is None and unit(None) is None


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
