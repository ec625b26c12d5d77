"""--format text on reports whose strings come from a hostile target (or a
malformed report given to `collector symbolize`): no control character
taken from the report reaches the output, every line is one the renderer
meant, and nothing but text comes out."""
from __future__ import annotations

import re

from hypothesis import given, settings, strategies as st

from collector.text import Style, clean, render

FORGED = "ok\x1b[2J\x07\rTID 1 \"forged\":\n#0   0x0000000000000000 evil\u2028\u202e\x85"


def report(name=FORGED, exe=FORGED, function=FORGED, path=FORGED, error=FORGED) -> dict:
    frame = {"index": 0, "pc": 0x401000, "function": function, "offset": 4, "module": path,
             "method": "cfi", "file": path, "line": 3, "column": 1}
    return {"process": {"pid": 7, "exe": exe, "name": name},
            "signal": {"name": "SIGSEGV", "si_addr": 0},
            "threads": [{"tid": 7, "name": name, "frames": [frame, dict(frame, index=1)],
                         "stop_reason": error}],
            "errors": [error]}


def assert_inert(text: str, threads: int, frames: int, errors: int, signal: bool = True) -> None:
    lines = text.split("\n")
    assert lines[-1] == "" and "\n" not in text.rstrip("\n").replace("\n", "")
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in text.replace("\n", "")), text
    assert "\u2028" not in text and "\u202e" not in text
    # header, signal, a TID line and a stop line per thread, frame and file lines, errors
    assert len(lines) - 1 == 1 + signal + 2 * threads + frames + errors, text


def test_forged_lines_are_escaped():
    text = render(report())
    assert_inert(text, threads=1, frames=4, errors=1)
    assert "\\x1b[2J\\x07\\rTID 1" in text and "\\n#0" in text and "\\u2028\\u202e\\x85" in text
    assert [line for line in text.splitlines() if line.startswith("TID ")] == \
        [f'TID 7 "{clean(FORGED)}":']


def test_backslash_is_escaped_so_an_escape_cannot_be_faked():
    assert clean("a\\x1b") == "a\\\\x1b"
    assert clean("/usr/lib/libc.so.6") == "/usr/lib/libc.so.6"


def test_wrong_types_print_as_question_marks():
    text = render({"process": "x", "signal": {"si_addr": "0x10"},
                   "threads": [{"tid": [1], "frames": [{"pc": "12", "offset": 1.5,
                                                        "function": 3, "index": None}]}, 5],
                   "errors": "not a list"})
    assert text.splitlines() == ["PID", "signal  at ?", 'TID [1] "":', "#0   ? 3+?", "     stop: "]


ANY_TEXT = st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT, ANY_TEXT, ANY_TEXT, ANY_TEXT, ANY_TEXT)
def test_any_strings_stay_on_their_lines(name, exe, function, path, error):
    assert_inert(render(report(name, exe or "x", function or "f", path or "p", error)),
                 threads=1, frames=4, errors=1)


class Tty:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_terminal_style(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert Style.of(Tty(False)) == Style()
    assert Style.of(Tty(True)).colour
    monkeypatch.setenv("NO_COLOR", "1")
    assert not Style.of(Tty(True)).colour and Style.of(Tty(True)).width


def test_colours_only_when_asked_and_lines_fit_the_width():
    long_path = "/opt/" + "deeply/" * 12 + "libthing.so.1"
    r = report("name", "/bin/x", "a_function_name_" * 8, long_path, "oops")
    r["threads"][0]["crashed"] = True
    plain = render(r)
    assert "\x1b" not in plain
    coloured = render(r, Style(colour=True))
    assert "\x1b[1;31m (crashed)\x1b[0m" in coloured and "\x1b[33merror: oops\x1b[0m" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain
    narrow = render(r, Style(width=80))
    frames = [line for line in narrow.splitlines() if line.startswith("#")]
    assert frames and all(len(line) <= 80 for line in frames), narrow
    assert all("(…/libthing.so.1)" in line for line in frames), narrow
    assert long_path in plain, "without a width nothing is cut"
