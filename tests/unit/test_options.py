"""The command-line values list and show take: times as journalctl reads
them, matches as coredumpctl reads them."""
from __future__ import annotations

import argparse
import datetime
import time

import pytest

from collector.commands.options import match, when


def test_when():
    now = time.time()
    assert abs(when("now") - now) < 2
    assert abs(when("1h ago") - (now - 3600)) < 2
    assert abs(when("90min ago") - (now - 5400)) < 2
    assert when("@1700000000") == 1700000000
    today = datetime.datetime.now().astimezone().replace(hour=0, minute=0, second=0,
                                                         microsecond=0)
    assert when("today") == today.timestamp()
    assert when("yesterday") == today.timestamp() - 86400
    local = datetime.datetime(2026, 12, 1, 10, 0).astimezone()
    assert when("2026-12-01 10:00") == local.timestamp()
    assert when("2026-12-01T10:00:00+00:00") == datetime.datetime(
        2026, 12, 1, 10, tzinfo=datetime.timezone.utc).timestamp()
    for bad in ("soon", "1 fortnight ago", "2026-13-01", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            when(bad)


def test_match():
    assert match("1234") == ("pid", "1234")
    assert match("/usr/bin/x") == ("exe", "/usr/bin/x")
    assert match("nginx") == ("name", "nginx")
    assert match("fingerprint=abc") == ("fingerprint", "abc")
    assert match("unit=a=b.service") == ("unit", "a=b.service")
    with pytest.raises(argparse.ArgumentTypeError):
        match("colour=red")
