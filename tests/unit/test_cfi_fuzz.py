"""Must-not-raise: garbage CFI yields None, CfiError or MemoryFault, quickly, never anything else."""
from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dict_regs import evaluate, step
from unwinder.cfi import CfiError, CfiTable, Row
from unwinder.leb128 import encode_sleb as S, encode_uleb as U
from unwinder.space import MemoryFault

LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")
FUZZ = settings(max_examples=300, deadline=500, suppress_health_check=[HealthCheck.too_slow])
EH_ADDR = 0x10_0000
MASK = (1 << 64) - 1

u64 = st.integers(0, MASK)
pcs = st.lists(st.one_of(st.integers(0, 0x300), u64), min_size=1, max_size=8)
registers = st.dictionaries(st.integers(0, 40), u64, max_size=20)


def load(addr: int) -> int:
    """Memory that exists only in one window, to hit both outcomes."""
    if 0x7000 <= addr < 0x9000:
        return (addr * 0x9E3779B97F4A7C15) & MASK
    raise MemoryFault(addr, 8)


def quietly(fn, *args):
    start = time.perf_counter()
    try:
        return fn(*args)
    except (CfiError, MemoryFault):
        return None
    finally:
        assert time.perf_counter() - start < 0.5


def lookups(table: CfiTable, pcs_: list[int], regs: dict[int, int] | None = None) -> None:
    for pc in pcs_:
        row = quietly(table.row_for, pc)
        assert row is None or isinstance(row, Row)
        if row is not None and regs is not None:
            result = quietly(step, row, regs, load)
            if result is not None:
                cfa, caller = result
                assert 0 <= cfa <= MASK and all(0 <= v <= MASK for v in caller.values())


@FUZZ
@given(st.binary(max_size=512), st.one_of(st.none(), st.binary(max_size=64)), u64, pcs)
def test_random_eh_frame(eh, hdr, hdr_addr, pcs_):
    table = CfiTable.from_eh_frame(eh, EH_ADDR, hdr, hdr_addr & 0xFFFF_FFFF, 0x1000, 0x2000)
    lookups(table, pcs_)


@FUZZ
@given(st.binary(max_size=512), st.sampled_from([4, 8]), pcs)
def test_random_debug_frame(data, address_size, pcs_):
    lookups(CfiTable.from_debug_frame(data, address_size), pcs_)


def _entry(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


@FUZZ
@given(cie_insns=st.binary(max_size=24), fde_insns=st.binary(max_size=96),
       caf=st.integers(0, 300), daf=st.integers(-300, 300), ra=st.integers(0, 40),
       aug=st.sampled_from([b"zR", b"zRS", b"zPLR", b"", b"zRB"]),
       pcs_=st.lists(st.integers(0, 0x200), min_size=1, max_size=6), regs=registers)
def test_random_programs_over_valid_entries(cie_insns, fde_insns, caf, daf, ra, aug, pcs_, regs):
    """Valid headers around random instructions: the interpreter and step() see garbage."""
    aug_data = {b"zR": b"\x1b", b"zRS": b"\x1b", b"zRB": b"\x1b",
                b"zPLR": b"\x9b\x00\x00\x00\x00\x1b\x1b", b"": b""}[aug]
    cie = (b"\0\0\0\0\x01" + aug + b"\0" + U(caf) + S(daf) + bytes([ra])
           + (U(len(aug_data)) + aug_data if aug else b"") + cie_insns)
    data = _entry(cie)
    fde_off = len(data)
    if aug:  # 'R' pcrel|sdata4, function at address 0
        fde = struct.pack("<Iii", fde_off + 4, -(EH_ADDR + fde_off + 8), 0x200)
        fde += (b"\x04\0\0\0\0" if aug == b"zPLR" else b"\x00") + fde_insns
    else:     # no augmentation: absolute 8-byte addresses
        fde = struct.pack("<IQQ", fde_off + 4, 0, 0x200) + fde_insns
    data += _entry(fde) + b"\0\0\0\0"
    table = CfiTable.from_eh_frame(data, EH_ADDR)
    assert len(table) == 1
    lookups(table, pcs_, {7: 0x8000, 16: 0x10, **regs})


@pytest.mark.skipif(not LIBC.exists(), reason="needs the Debian x86-64 libc")
@FUZZ
@given(st.lists(st.tuples(st.one_of(st.integers(0, 47), st.integers(0, 4095)), st.integers(0, 255)),
                min_size=1, max_size=16),
       st.lists(st.integers(0x26000, 0x40000), min_size=1, max_size=8), registers)
def test_mutated_libc_eh_frame(flips, pcs_, regs):
    eh_addr, prefix = _libc_prefix()
    data = bytearray(prefix)
    for pos, value in flips:
        data[pos] = value
    lookups(CfiTable.from_eh_frame(bytes(data), eh_addr), pcs_, {7: 0x8000, 6: 0x7800, 16: 0x26010, **regs})


_PREFIX: list = []


def _libc_prefix() -> tuple[int, bytes]:
    """The first 4 KiB of libc's .eh_frame (a CIE and dozens of FDEs), read once."""
    if not _PREFIX:
        from elftools.elf.elffile import ELFFile
        with open(LIBC, "rb") as f:
            sec = ELFFile(f).get_section_by_name(".eh_frame")
            _PREFIX.append((sec["sh_addr"], sec.data()[:4096]))
    return _PREFIX[0]


@FUZZ
@given(st.binary(max_size=64), registers, st.lists(u64, max_size=3), st.one_of(st.none(), u64))
def test_random_expressions(expr, regs, stack, cfa):
    value = quietly(lambda: evaluate(expr, regs, load, stack, cfa=cfa))
    assert value is None or 0 <= value <= MASK


@FUZZ
@given(st.lists(st.sampled_from([b"\x12", b"\x28\xfa\xff", b"\x2f\xfd\xff", b"\x31", b"\x24",
                                 b"\x16", b"\x1e", b"\x08\xff", b"\x26", b"\x22"]), max_size=30))
def test_expression_soup_is_bounded(parts):
    value = quietly(lambda: evaluate(b"".join(parts), {}, load, [1]))
    assert value is None or 0 <= value <= MASK
