"""A command that fails after it has its report sends that report first,
with the reason in its errors, then exits as the failure says (1 for a bug
in us). In process, with a bug injected after the crash was taken: the
collector's tracer code is real, the fixture really crashes."""
from __future__ import annotations

import json

from collector import cli
from collector.targets import tracer

from .helpers import names, schema_errors


def test_run_that_fails_after_the_crash_still_delivers_it(builder, tmp_path, monkeypatch, capsys):
    exe = builder.build("crash.c")

    def describe(status):
        raise RuntimeError("a bug after the report was taken")

    monkeypatch.setattr(tracer, "describe", describe)
    out = tmp_path / "reports.jsonl"
    (tmp_path / "c.toml").write_text(f'[collector]\nstate_dir = "{tmp_path}/state"\n'
                                     f'[spool]\ndir = "{tmp_path}/spool"\n'
                                     f'[[sink]]\ntype = "file"\npath = "{out}"\n')
    rc = cli.main(["--config", str(tmp_path / "c.toml"), "run", "--symbolize-budget", "0",
                   "--", str(exe), "null"])
    assert rc == 1
    assert "internal error: RuntimeError: a bug after the report was taken" in \
        capsys.readouterr().err
    report = json.loads(out.read_text())
    assert not schema_errors(report)
    assert report["signal"]["name"] == "SIGSEGV"
    crashed = next(t for t in report["threads"] if t.get("crashed"))
    assert names(crashed)[1:5] == ["inner", "middle", "outer", "main"]
    assert report["errors"][-1] == ("run failed after the report was taken: RuntimeError: "
                                    "a bug after the report was taken")
