"""The front of an ELF core as the kernel writes it: the ELF header, the
program headers, then the PT_NOTE segment (the dumping thread's
NT_PRSTATUS first, then NT_PRPSINFO, NT_SIGINFO, NT_AUXV, NT_FILE, then
the other threads). Read from a Stream with nothing heavy imported: the
pipe handler decides on a crash storm from these notes before it loads
anything else (service/early.py); corefile.py builds the Layout from them."""
from __future__ import annotations

import struct

ET_CORE, EM_X86_64 = 4, 62
PT_LOAD, PT_NOTE = 1, 4     # as unwinder.elf, which this module must not import (it is slow to)
PN_XNUM = 0xFFFF
NT_PRSTATUS, NT_PRPSINFO, NT_AUXV = 1, 3, 6
NT_SIGINFO, NT_FILE = 0x53494749, 0x46494C45
AT_ENTRY, AT_SYSINFO_EHDR = 9, 33
_EHDR = struct.Struct("<4sBB10xHH12xQ16xH")  # magic, class, data, type, machine, phoff, phnum
_PHDR = struct.Struct("<IIQQ8xQQ8x")          # type, flags, offset, vaddr, filesz, memsz
# Most a note of each kind may hold (NT_FILE: the kernel caps it at 16 MiB).
NOTE_LIMITS = {NT_PRSTATUS: 4096, NT_PRPSINFO: 4096, NT_SIGINFO: 4096, NT_AUXV: 64 << 10,
               NT_FILE: 16 << 20}
MAX_FILE_OFFSET = (1 << 63) - 1  # off_t

# struct elf_prstatus: pr_pid at 32, pr_reg (struct user_regs_struct) at 112
PR_REG_NAMES = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
                "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp")
_PRSTATUS = struct.Struct("<iiih2x16xiiii64x" + "Q" * len(PR_REG_NAMES))
# struct elf_prpsinfo: state, sname, zomb, nice, flag, uid, gid, pid, ppid, pgrp, sid, fname, psargs
_PRPSINFO = struct.Struct("<bcbb4xQIIiiii16s80s")
_SIGINFO = struct.Struct("<iii4xQ")
# what a malformed note's decoding raises
NOTE_ERRORS = (struct.error, ValueError, IndexError)


class CoreError(Exception):
    """The input cannot be read as an x86-64 ELF core (not one, or cut
    inside its headers)."""


def program_headers(stream) -> list[tuple[int, int, int, int, int, int]]:
    """(type, flags, offset, vaddr, filesz, memsz) of each program header."""
    head = stream.read(_EHDR.size)
    if len(head) < _EHDR.size:
        raise CoreError(f"not an ELF core file: only {len(head)} bytes")
    magic, klass, data, kind, machine, phoff, phnum = _EHDR.unpack(head)
    if magic != b"\x7fELF" or klass != 2 or data != 1:
        raise CoreError("not an ELF core file (no 64-bit little-endian ELF header)")
    if kind != ET_CORE or machine != EM_X86_64:
        raise CoreError(f"not an x86-64 core file (ELF type {kind}, machine {machine})")
    if phnum == PN_XNUM:
        raise CoreError("more than 65534 mappings (PN_XNUM) is not supported")
    if not _EHDR.size <= phoff <= 1 << 20:
        raise CoreError(f"program headers at an odd offset {phoff:#x}")
    stream.skip_to(phoff)
    table = stream.read(phnum * _PHDR.size)
    if len(table) < phnum * _PHDR.size:
        raise CoreError(f"the core ends inside its program headers (at {stream.pos} bytes)")
    return list(_PHDR.iter_unpack(table))


def notes(stream, offset: int, size: int, errors: list[str]):
    """(type, descriptor) of each CORE note of the segment at `offset`, in
    order, within NOTE_LIMITS (others are skipped); what is wrong with the
    segment is added to `errors`."""
    end = offset + size
    stream.skip_to(offset)
    while stream.pos + 12 <= end:
        head = stream.read(12)
        if len(head) < 12:
            break
        namesz, descsz, kind = struct.unpack("<III", head)
        desc_at = stream.pos + _align4(namesz)
        desc_end = desc_at + _align4(descsz)
        if desc_end > end:
            errors.append(f"note of type {kind:#x} at {stream.pos - 12:#x} runs past "
                          "its segment: the rest of the notes are garbage")
            break
        name = stream.read(_align4(namesz))[:namesz].rstrip(b"\0")
        if name == b"CORE" and kind in NOTE_LIMITS and descsz <= NOTE_LIMITS[kind]:
            desc = stream.read(descsz)
            if len(desc) == descsz:
                yield kind, desc
        stream.skip_to(desc_end)
    if stream.pos < end:
        errors.append(f"the core ends inside its notes (at {stream.pos} of {end} bytes)")


def prstatus(desc: bytes) -> tuple[int, tuple[int, ...]]:
    """(tid, register values in PR_REG_NAMES order)."""
    _, _, _, _, pid, _, _, _, *values = _PRSTATUS.unpack_from(desc)
    return pid, tuple(values)


def prpsinfo(desc: bytes) -> dict:
    *_, uid, gid, pid, ppid, _, _, fname, psargs = _PRPSINFO.unpack_from(desc)
    return {"pid": pid, "ppid": ppid, "uid": uid, "gid": gid,
            "name": _text(fname), "args": _text(psargs)}


def siginfo(desc: bytes) -> dict:
    signo, _, code, addr = _SIGINFO.unpack_from(desc)
    return {"signo": signo, "code": code, "addr": addr}


def auxv(desc: bytes) -> dict[int, int]:
    words = struct.unpack_from(f"<{len(desc) // 8}Q", desc)
    return dict(zip(words[0::2], words[1::2]))


def nt_file(desc: bytes) -> dict[int, tuple[int, int, str]]:
    """Mapping start -> (end, file offset, path)."""
    count, page = struct.unpack_from("<QQ", desc)
    if 16 + count * 24 > len(desc):
        raise ValueError(f"{count} entries do not fit in {len(desc)} bytes")
    names = desc[16 + count * 24:].split(b"\0")
    out = {}
    for i in range(count):
        start, end, pgoff = struct.unpack_from("<QQQ", desc, 16 + i * 24)
        if start >= end or pgoff * page > MAX_FILE_OFFSET:
            continue  # no mapping the kernel writes: not worth one for a read
        path = names[i].decode("utf-8", "replace") if i < len(names) else ""
        out[start] = (end, pgoff * page, path)
    return out


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
