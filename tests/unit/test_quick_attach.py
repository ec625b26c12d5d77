"""`attach PID` is captured before its command line is parsed
(attach.quick): only where the parser would read it the same way."""
from __future__ import annotations

import os

import pytest

from collector import cli, errors
from collector.attach import QUICK_FLAGS, quick
from collector.targets import DEFAULT_STACK_WINDOW, DEFAULT_STOP_TIMEOUT


@pytest.mark.parametrize("words", [
    [], ["-h"], ["--help"], ["--max-frames", "5", "123"], ["--stop-timeout=5", "123"],
    ["--stack-window", "1M", "123"], ["--fr", "123"], ["--", "123"], ["123", "456"],
    ["0"], ["+5"], ["-5"], [" 5"], ["5x"], ["\u0665"], ["--freeze"]])
def test_other_command_lines_are_parsed_first(words):
    assert quick(words) is None  # nothing captured: no such process would have raised


def test_the_quick_form_is_what_the_parser_reads():
    """Its flags take no value, the pid is the only positional, and the
    capture's values are the parser's defaults."""
    sub = next(a for a in cli.parser(["attach"])._actions if a.dest == "command")
    attach = sub.choices["attach"]
    flags = {o: a for a in attach._actions for o in a.option_strings}
    assert all(flags[f].nargs == 0 for f in QUICK_FLAGS)
    assert [a.dest for a in attach._actions if not a.option_strings] == ["pid"]
    for words in (["1"], ["--freeze", "1", "--no-service"]):
        args = cli.parser(["attach", *words]).parse_args(["attach", *words])
        assert (args.pid, args.stack_window, args.stop_timeout, args.freeze) == (
            1, DEFAULT_STACK_WINDOW, DEFAULT_STOP_TIMEOUT, "--freeze" in words)


def test_a_refused_capture_is_raised_by_the_first_step():
    first = quick([str(os.getpid())])
    with pytest.raises(errors.OwnProcess, match="is the collector itself"):
        first(object())
