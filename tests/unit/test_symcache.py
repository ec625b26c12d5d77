"""The disk cache of symbolization (collector.symcache): a cold run with a
state directory gives the report it gives without one, reading no DWARF for
the addresses cached; a stripped copy of the same build, a corrupt, foreign
or group-writable cache file are not used; files are 0600 and bounded."""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from test_lines import FIXTURES, instructions, run

from collector import symcache
from collector.symbolize import symbolize
from unwinder.symbols.lines import DwarfLines

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("symcache") / "lines"
    run("gcc", "-O2", "-g", "-I", FIXTURES, FIXTURES / "lines.c", "-o", out)
    return out


def build_id(path: Path) -> str:
    return re.search(r"Build ID: ([0-9a-f]+)", run("readelf", "-n", path)).group(1)


def report_for(path: Path) -> dict:
    """One thread per instruction of the fixture's functions (frame 0: the
    pc itself is looked up), inlined calls among them."""
    addrs = instructions(path)
    bid = build_id(path)
    return {"threads": [{"tid": i, "frames": [{"index": 0, "pc": a, "rel_pc": a, "module": str(path),
                                              "build_id": bid, "method": "context"}]}
                        for i, a in enumerate(addrs)]}


def frames(report: dict) -> list:
    return [t["frames"] for t in report["threads"]]


def test_a_cold_run_reads_the_cache_instead_of_dwarf(binary, tmp_path, monkeypatch):
    report = report_for(binary)
    plain = symbolize(copy.deepcopy(report), 60.0)
    assert any(len(f) > 1 for f in frames(plain)), "the fixture should have inlined frames"
    first = symbolize(copy.deepcopy(report), 60.0, state_dir=str(tmp_path))
    path = tmp_path / "symbols" / f"{build_id(binary)}.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert frames(first) == frames(plain)

    def no_dwarf(self, addr):
        raise AssertionError("DWARF read although the cache has the address")
    monkeypatch.setattr(DwarfLines, "locate", no_dwarf)
    second = symbolize(copy.deepcopy(report), 60.0, state_dir=str(tmp_path))
    assert frames(second) == frames(plain)
    assert not second["errors"]


def test_a_stripped_copy_of_the_same_build_does_not_use_it(binary, tmp_path):
    stripped = tmp_path / "stripped"
    run("objcopy", "--strip-debug", binary, stripped)
    assert build_id(stripped) == build_id(binary)
    symbolize(report_for(binary), 60.0, state_dir=str(tmp_path))
    report = report_for(binary)
    for thread in report["threads"]:
        thread["frames"][0]["module"] = str(stripped)
    want = symbolize(copy.deepcopy(report), 60.0)
    assert not any("file" in f for t in want["threads"] for f in t["frames"])
    assert frames(symbolize(report, 60.0, state_dir=str(tmp_path))) == frames(want)


@pytest.mark.parametrize("damage", [
    b"", b"{", b"[]", b'{"version": 1}', b"\xff\xfe garbage",
    "entries", "types", "fingerprint", "build_id", "huge"])
def test_a_damaged_cache_file_is_ignored(binary, tmp_path, damage):
    report = report_for(binary)
    want = symbolize(copy.deepcopy(report), 60.0)
    symbolize(copy.deepcopy(report), 60.0, state_dir=str(tmp_path))
    path = tmp_path / "symbols" / f"{build_id(binary)}.json"
    doc = json.loads(path.read_text())
    if isinstance(damage, bytes):
        data = damage
    elif damage == "huge":
        data = b" " * (symcache.MAX_FILE_BYTES + 1)
    else:
        if damage == "entries":
            doc["entries"] = {"0": 1}
        elif damage == "types":
            doc["entries"] = [[e[0], ["f", "not a number"], e[2]] for e in doc["entries"]]
        elif damage == "fingerprint":
            doc["fingerprint"] = "0" * 64
            for e in doc["entries"]:
                e[2] = [["forged", None, "/forged.c", 1, 1]]
        else:
            doc["build_id"] = "00"
        data = json.dumps(doc).encode()
    path.write_bytes(data)
    got = symbolize(copy.deepcopy(report), 60.0, state_dir=str(tmp_path))
    assert frames(got) == frames(want)
    assert not got["errors"]


def test_a_file_others_may_write_is_not_read(binary, tmp_path):
    report = report_for(binary)
    want = symbolize(copy.deepcopy(report), 60.0)
    symbolize(copy.deepcopy(report), 60.0, state_dir=str(tmp_path))
    path = tmp_path / "symbols" / f"{build_id(binary)}.json"
    doc = json.loads(path.read_text())
    for e in doc["entries"]:
        e[2] = [["forged", None, "/forged.c", 1, 1]]
    path.write_text(json.dumps(doc))
    os.chmod(path, 0o600)  # ours: read (so the check below can fail)
    forged = symbolize(copy.deepcopy(report), 60.0, state_dir=str(tmp_path))
    assert any(f.get("file") == "/forged.c" for t in forged["threads"] for f in t["frames"])
    os.chmod(path, 0o620)
    assert frames(symbolize(copy.deepcopy(report), 60.0, state_dir=str(tmp_path))) == frames(want)


def test_the_directory_keeps_at_most_max_files(binary, tmp_path, monkeypatch):
    monkeypatch.setattr(symcache, "MAX_FILES", 3)
    store = symcache.SymbolCache(str(tmp_path))
    for i in range(6):
        store.save(f"{i:02x}" * 20, "p", {i: (None, [])})
        os.utime(tmp_path / "symbols" / (f"{i:02x}" * 20 + ".json"), ns=(i, i))
    names = sorted(os.listdir(tmp_path / "symbols"))
    assert names == [f"{i:02x}" * 20 + ".json" for i in (3, 4, 5)]


def test_an_expired_budget_still_says_so(binary, tmp_path):
    report = report_for(binary)
    symbolize(copy.deepcopy(report), 60.0, state_dir=str(tmp_path))
    got = symbolize(copy.deepcopy(report), 1e-9, state_dir=str(tmp_path))
    assert any("time budget" in e for e in got["errors"])
    assert len(got["threads"]) == len(report["threads"])


def test_a_warm_process_does_not_read_or_write_it(binary, tmp_path, monkeypatch):
    from unwinder.modules import ImageCache
    report = report_for(binary)
    images = ImageCache()
    symbolize(copy.deepcopy(report), 60.0, images)  # warm: the unit is in memory
    monkeypatch.setattr(symcache.SymbolCache, "load", lambda *a: pytest.fail("read"))
    monkeypatch.setattr(symcache.SymbolCache, "save", lambda *a: pytest.fail("written"))
    symbolize(copy.deepcopy(report), 60.0, images, state_dir=str(tmp_path))
