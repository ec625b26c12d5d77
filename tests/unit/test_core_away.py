"""Which perf map a dead process's core may use (perfmap.for_core), and
the locator's refusals over a layout built here (the end-to-end cases are
tests/e2e/test_core_away.py)."""
from __future__ import annotations

from collector import perfmap
from collector.targets.corefile import PF_R, PF_X, Layout, Notes
from collector.targets.locate import Where, locate
from unwinder.elf import Segment

JIT, TEXT = 0x7F00_0000_0000, 0x40_0000
ENDED, STARTED = 1_000_000.0, 999_000.0


def layout(pid=42) -> Layout:
    notes = Notes(psinfo={"pid": pid, "ppid": 1, "uid": 0, "gid": 0, "name": "x", "args": "x"},
                  files={TEXT: (TEXT + 0x1000, 0, "/nonexistent/x")})
    loads = [Segment(1, PF_R | PF_X, 0, TEXT, 0x1000, 0x1000),
             Segment(1, PF_R | PF_X, 0x1000, JIT, 0x1000, 0x1000)]
    return Layout(loads, notes, 0x2000)


def decide(mtime, started=STARTED, text=f"{JIT + 0x10:x} 20 jit_function\n"):
    seen = []

    def read(name):
        seen.append(name)
        return text, mtime
    got = perfmap.for_core(layout(), read, ENDED, started)
    assert seen == ["/tmp/perf-42.map"]
    return got


def test_a_map_written_while_the_process_ran_is_used():
    text, name, why = decide(ENDED - 10)
    assert text and name == "/tmp/perf-42.map" and why is None
    assert decide(ENDED - 10, started=None)[0], "offline: no start time, still used"


def test_modified_after_the_crash_is_refused():
    text, _, why = decide(ENDED + 5)
    assert text is None and "after the crash" in why and "5 s" in why


def test_older_than_the_process_is_refused():
    text, _, why = decide(STARTED - 3600)
    assert text is None and "before the process started" in why


def test_a_map_naming_no_anonymous_code_is_refused():
    for lines in (f"{TEXT:x} 20 in_a_file\n", "garbage\n", ""):
        text, _, why = decide(ENDED - 10, text=lines)
        assert text is None and why and "not used" in why, lines


def test_no_map_no_pid():
    assert perfmap.for_core(layout(), lambda name: None, ENDED, None) == \
        (None, "/tmp/perf-42.map", None)
    assert perfmap.for_core(layout(pid=0), lambda name: 1 / 0, ENDED, None)[0] is None


def test_locator_without_a_header_page_takes_the_recorded_path_unchecked(tmp_path):
    exe = tmp_path / "x"
    exe.write_bytes(b"not even ELF")
    lay = layout()
    lay.notes.files = {TEXT: (TEXT + 0x1000, 0, str(exe))}
    found = locate(lay, lambda addr, n: None, Where(sysroot=str(tmp_path / "root")), set())
    assert found.paths == {str(exe): str(exe)} and found.how == {str(exe): "path"}
    lay.notes.files = {TEXT: (TEXT + 0x1000, 0, str(tmp_path / "gone"))}
    found = locate(lay, lambda addr, n: None, Where(), set())
    assert found.paths == {} and found.why_not == {str(tmp_path / "gone"): "no file found"}
