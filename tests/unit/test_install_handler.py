"""install-handler's pipe-mode core_pattern: by default the isolated
interpreter on an entry script in the state directory (no runpy, no
wrapper's imports), else the collector program as before."""
from __future__ import annotations

import ast
import subprocess
import sys
import types

import pytest

from collector.commands import install_handler
from collector.service import pipe
from collector.service.pipe import KERNEL_ARGS


def args(tmp_path, **kw):
    return types.SimpleNamespace(**{"mode": "pipe", "socket": None, "command": None,
                                    "report_dir": None, "state_dir": str(tmp_path), **kw})


def run_entry(text: str, monkeypatch) -> tuple[list[str], str | None, list[str]]:
    """The argv the entry script hands to collector.__main__.run, where it
    has the pipe handler keep its settings, and what it added to the path."""
    seen = []
    fake = types.ModuleType("collector.__main__")
    before = list(sys.path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    fake.run = lambda: seen.append((list(sys.argv), pipe.settings_at, sys.path[len(before):]))
    monkeypatch.setattr(pipe, "settings_at", None)
    monkeypatch.setitem(sys.modules, "collector.__main__", fake)
    monkeypatch.setattr(sys, "argv", ["/abs/state/pipe-handler.py", "P=12", "e=a b"])
    exec(compile(text, "pipe-handler.py", "exec"), {"__name__": "__main__"})
    return seen[0]


@pytest.mark.parametrize("flags, path", [("-I -S", ["/v/site-packages", "/v/x y"]), ("-I", [])])
def test_default_is_the_isolated_interpreter_on_the_entry(tmp_path, monkeypatch, flags, path):
    monkeypatch.setattr(install_handler, "_isolated", lambda: (flags, path))
    pattern, text = install_handler.pattern(args(tmp_path, report_dir="/r dir"))
    assert pattern == f"|{sys.executable} {flags} {tmp_path}/pipe-handler.py {KERNEL_ARGS}"
    assert run_entry(text, monkeypatch) == (
        ["/abs/state/pipe-handler.py", "core", "--from-kernel", "--report-dir", "/r dir", "P=12",
         "e=a b"], f"{tmp_path}/pipe-settings", path)


def test_isolated_finds_the_installed_collector_without_site():
    """The suite's installed collector (scripts/venv did `pip install .`),
    asked from / where no PYTHONPATH reaches `-I`, is run `-I -S` with
    site's directories put on the path by the script; this tree's copy,
    on PYTHONPATH only, is found by neither form."""
    ask = "from collector.commands import install_handler as h; print(repr(h._isolated()))"
    r = subprocess.run([sys.executable, "-I", "-c", ask], capture_output=True, text=True,
                       timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    flags, path = ast.literal_eval(r.stdout)
    assert flags == "-I -S" and any(p.endswith("site-packages") for p in path), r.stdout
    assert install_handler._isolated() is None


def test_the_program_when_python_I_imports_another_collector(tmp_path, monkeypatch):
    monkeypatch.setattr(install_handler, "_isolated", lambda: None)
    monkeypatch.setattr(install_handler, "default_command", lambda: sys.executable)
    pattern, text = install_handler.pattern(args(tmp_path, report_dir="/r"))
    assert pattern == f"|{sys.executable} core --from-kernel --report-dir /r {KERNEL_ARGS}"
    assert text is None


def test_a_given_command_is_used_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(install_handler, "_isolated", lambda: ("-I -S", []))
    pattern, text = install_handler.pattern(args(tmp_path, command=sys.executable))
    assert pattern == f"|{sys.executable} core --from-kernel {KERNEL_ARGS}" and text is None

