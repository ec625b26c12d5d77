"""The three line-table decoders against the interpreters themselves: for
every code unit of every code object of a stdlib module, the line
PyCode_Addr2Line (called through ctypes in that interpreter) gives."""
from __future__ import annotations

import json
import subprocess

import pytest
from pythons import interpreters

from unwinder.interp.cpython_lines import linetable310_line, lnotab_line, locations_line

DUMP = r"""
import ctypes, json, sys, threading, types
addr2line = ctypes.pythonapi.PyCode_Addr2Line
addr2line.argtypes, addr2line.restype = [ctypes.py_object, ctypes.c_int], ctypes.c_int
def codes(co):
    yield co
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            yield from codes(c)
path = threading.__file__
out = []
for co in codes(compile(open(path).read(), path, "exec")):
    table = co.co_lnotab if sys.version_info < (3, 10) else co.co_linetable
    out.append([co.co_firstlineno, table.hex(),
                [addr2line(co, at) for at in range(-2, len(co.co_code), 2)]])
print(json.dumps([list(sys.version_info[:2]), out]))
"""


@pytest.mark.parametrize("python", interpreters())
def test_lines_as_the_interpreter_says(python):
    if python is None:
        pytest.skip("not installed")
    version, codes = json.loads(subprocess.run([python, "-c", DUMP], capture_output=True,
                                               check=True, timeout=60).stdout)
    assert len(codes) > 50
    for first, table, lines in codes:
        table = bytes.fromhex(table)
        for unit, want in enumerate(lines, -1):   # byte offsets -2, 0, 2, ...
            at = unit * 2
            if version < [3, 10]:
                got = lnotab_line(table, first, at)
            elif version < [3, 11]:
                got = linetable310_line(table, first, at)
            else:
                got = locations_line(table, first, unit) if at >= 0 else first
            assert got == (want if want >= 0 else None), (first, at, table.hex())


def test_garbage_tables_never_raise():
    import random
    rng = random.Random(7)
    for _ in range(300):
        table = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        for decode in (lnotab_line, linetable310_line, locations_line):
            got = decode(table, 10, rng.randrange(-2, 60))
            assert got is None or isinstance(got, int)
