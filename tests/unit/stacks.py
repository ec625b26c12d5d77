"""Builders of synthetic stacks for the walk's unit tests (test_walk.py,
test_fallback.py): a stack to push words on, a page of anonymous code to lay
calls in, and address spaces around them or around the ELF built from
walk_asm.s (functions with and without CFI at known symbols)."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

from unwinder.elf import PT_LOAD, ElfFile
from unwinder.modules import ModuleMap
from unwinder.space import FakeSpace, Mapping
from unwinder.walk import unwind

HERE = os.path.dirname(__file__)
CODE = 0x40_0000          # an anonymous executable page: code without any FDE
DATA = 0x60_0000          # readable, not executable
STACK_TOP = 0x7FFF_0000_0000
STACK_SIZE = 0x10000


class Stack:
    """A synthetic stack growing down from STACK_TOP: push words, keep labels."""

    def __init__(self, size: int = STACK_SIZE):
        self.sp = STACK_TOP
        self.size = size
        self.words: dict[int, int] = {}

    def push(self, value: int) -> int:
        self.sp -= 8
        self.words[self.sp] = value & (2**64 - 1)
        return self.sp

    def mapping(self) -> Mapping:
        return Mapping(STACK_TOP - self.size, STACK_TOP, "rw-p", path="[stack]")

    def memory(self) -> bytes:
        mem = bytearray(self.size)
        for addr, value in self.words.items():
            off = addr - (STACK_TOP - self.size)
            mem[off:off + 8] = struct.pack("<Q", value & (2**64 - 1))
        return bytes(mem)


class Code:
    """Instructions laid out in the CODE page; `call(form)` returns the
    address just after the call, i.e. a return address."""

    def __init__(self):
        self.data = bytearray(b"\xcc" * 0x1000)
        self.pos = 0x10

    def call(self, form: bytes = bytes.fromhex("e8 00 00 00 00")) -> int:
        self.data[self.pos:self.pos + len(form)] = form
        self.pos += len(form) + 16
        return CODE + self.pos - 16


def space(stack: Stack, code: Code, extra_maps=(), blocks=None) -> FakeSpace:
    maps = [Mapping(CODE, CODE + 0x1000, "rwxp"), Mapping(DATA, DATA + 0x1000, "rw-p"),
            stack.mapping(), *extra_maps]
    return FakeSpace({STACK_TOP - stack.size: stack.memory(), CODE: bytes(code.data),
                      DATA: bytes(0x1000), **(blocks or {})}, maps)


def walk(stack: Stack, code: Code, regs, **kw):
    s = space(stack, code)
    return unwind(s, ModuleMap(s), regs, **kw)


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """(path, ElfFile, {symbol: address}) of walk_asm.s, linked static at a
    fixed address."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the test binary")
    out = tmp_path_factory.mktemp("walk") / "walk_asm"
    subprocess.run(["gcc", "-nostdlib", "-static", "-no-pie", "-Wl,--eh-frame-hdr",
                    "-Wl,-e,caller", os.path.join(HERE, "walk_asm.s"), "-o", str(out)],
                   check=True)
    elf = ElfFile(out.read_bytes())
    symbols = {}
    rows, names = elf.function_table(".symtab")
    for addr, _, _, _, name_off, _ in rows:
        symbols[names[name_off:names.index(b"\0", name_off)].decode()] = addr
    return str(out), elf, symbols


def elf_space(binary, stack: Stack | dict[int, int], regs: dict[int, int]) -> FakeSpace:
    """The ELF's segments (their bytes readable, as in a process) and a stack."""
    path, elf, _ = binary
    if isinstance(stack, dict):
        words, stack = stack, Stack()
        stack.words = words
    st_ = os.stat(path)
    maps, blocks = [], {}
    for seg in elf.segments:
        if seg.type == PT_LOAD:
            perms = ("r" if seg.flags & 4 else "-") + ("w" if seg.flags & 2 else "-") + \
                    ("x" if seg.flags & 1 else "-") + "p"
            start = seg.vaddr & ~0xFFF
            end = (seg.vaddr + seg.memsz + 0xFFF) & ~0xFFF
            maps.append(Mapping(start, end, perms, seg.offset & ~0xFFF, "08:01", st_.st_ino,
                                path))
            data = bytearray(end - start)
            data[seg.vaddr - start:seg.vaddr - start + seg.filesz] = \
                elf.data[seg.offset:seg.offset + seg.filesz]
            blocks[start] = bytes(data)
    maps.append(stack.mapping())
    blocks[STACK_TOP - stack.size] = stack.memory()
    return FakeSpace(blocks, maps, {1: regs})


def elf_walk(binary, stack, regs, **kw):
    s = elf_space(binary, stack, regs)
    return unwind(s, ModuleMap(s), regs, **kw)
