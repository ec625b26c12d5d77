"""install-handler's pipe-mode core_pattern: by default the isolated
interpreter on an entry script in the state directory (no runpy, no
wrapper's imports), else the collector program as before."""
from __future__ import annotations

import sys
import types

from collector.commands import install_handler
from collector.service import pipe
from collector.service.pipe import KERNEL_ARGS


def args(tmp_path, **kw):
    return types.SimpleNamespace(**{"mode": "pipe", "socket": None, "command": None,
                                    "report_dir": None, "state_dir": str(tmp_path), **kw})


def run_entry(text: str, monkeypatch) -> tuple[list[str], str | None]:
    """The argv the entry script hands to collector.__main__.run, and where
    it has the pipe handler keep its settings."""
    seen = []
    fake = types.ModuleType("collector.__main__")
    fake.run = lambda: seen.append((list(sys.argv), pipe.settings_at))
    monkeypatch.setattr(pipe, "settings_at", None)
    monkeypatch.setitem(sys.modules, "collector.__main__", fake)
    monkeypatch.setattr(sys, "argv", ["/abs/state/pipe-handler.py", "P=12", "e=a b"])
    exec(compile(text, "pipe-handler.py", "exec"), {"__name__": "__main__"})
    return seen[0]


def test_default_is_the_isolated_interpreter_on_the_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(install_handler, "_isolated", lambda: True)
    pattern, text = install_handler.pattern(args(tmp_path, report_dir="/r dir"))
    assert pattern == f"|{sys.executable} -I {tmp_path}/pipe-handler.py {KERNEL_ARGS}"
    assert run_entry(text, monkeypatch) == (
        ["/abs/state/pipe-handler.py", "core", "--from-kernel", "--report-dir", "/r dir", "P=12",
         "e=a b"], f"{tmp_path}/pipe-settings")


def test_the_program_when_python_I_imports_another_collector(tmp_path, monkeypatch):
    monkeypatch.setattr(install_handler, "_isolated", lambda: False)
    monkeypatch.setattr(install_handler, "default_command", lambda: sys.executable)
    pattern, text = install_handler.pattern(args(tmp_path, report_dir="/r"))
    assert pattern == f"|{sys.executable} core --from-kernel --report-dir /r {KERNEL_ARGS}"
    assert text is None


def test_a_given_command_is_used_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(install_handler, "_isolated", lambda: True)
    pattern, text = install_handler.pattern(args(tmp_path, command=sys.executable))
    assert pattern == f"|{sys.executable} core --from-kernel {KERNEL_ARGS}" and text is None

