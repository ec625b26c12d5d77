"""The core parser and the streaming reader over synthetic cores: what is
kept (stack windows within the budget, the vdso), what reads serve, and
"must not raise" for truncation at any offset and garbage notes."""
from __future__ import annotations

import functools
import os
import struct
import sys
import tempfile
import threading

import pytest
from hypothesis import given, settings, strategies as st

from collector.targets import RED_ZONE, corefile, corehead, stream
from unwinder.regs import RIP, RSP
from unwinder.elf import ElfFile
from unwinder.space import MemoryFault

PAGE = 4096
STACK = 0x7FF0_0000_0000
VDSO = 0x7FFF_F000_0000
TEXT = 0x40_0000


def note(kind: int, desc: bytes, name: bytes = b"CORE\0") -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), kind) + pad(name) + pad(desc)


def prstatus(tid: int, rip: int, rsp: int) -> bytes:
    regs = dict.fromkeys(corehead.PR_REG_NAMES, 0) | {"rip": rip, "rsp": rsp}
    head = struct.pack("<iiih2x16xiiii64x", 11, 0, 0, 11, tid, 1, tid, tid)
    return head + struct.pack(f"<{len(regs)}Q", *regs.values()) + b"\0" * (336 - 112 - 8 * 20)


def make_core(threads, loads, files=(), auxv=None, file_note: bytes | None = None) -> bytes:
    """threads: [(tid, rip, rsp)]; loads: [(vaddr, data, memsz, flags)];
    files: [(start, end, path)], or file_note: NT_FILE's raw contents. Laid
    out as the kernel does: headers, notes, then page-aligned segment data
    in order."""
    notes = b"".join(note(corefile.NT_PRSTATUS, prstatus(*t)) for t in threads)
    notes += note(corefile.NT_SIGINFO, struct.pack("<iii4xQ", 11, 0, 1, 0x10) + b"\0" * 104)
    aux = auxv or {corefile.AT_SYSINFO_EHDR: VDSO}
    notes += note(corefile.NT_AUXV, b"".join(struct.pack("<QQ", k, v) for k, v in aux.items()))
    if files:
        body = struct.pack("<QQ", len(files), PAGE)
        body += b"".join(struct.pack("<QQQ", s, e, 0) for s, e, _ in files)
        body += b"".join(p.encode() + b"\0" for _, _, p in files)
        notes += note(corefile.NT_FILE, body)
    if file_note is not None:
        notes += note(corefile.NT_FILE, file_note)
    phnum = 1 + len(loads)
    offset = 64 + 56 * phnum
    phdrs = [struct.pack("<IIQQQQQQ", 4, 0, offset, 0, 0, len(notes), 0, 1)]
    data = offset + len(notes)
    data += -data % PAGE
    blobs = b""
    for vaddr, blob, memsz, flags in loads:
        phdrs.append(struct.pack("<IIQQQQQQ", 1, flags, data + len(blobs), vaddr, 0,
                                 len(blob), memsz, PAGE))
        blobs += blob + b"\0" * (-len(blob) % PAGE)
    ehdr = struct.pack("<4sBBBB8xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 4, 62, 1, 0, 64, 0,
                       0, 64, 56, phnum, 64, 0, 0)
    head = ehdr + b"".join(phdrs) + notes
    return head + b"\0" * (data - len(head)) + blobs


def stack_bytes(size: int) -> bytes:
    return b"".join(struct.pack("<Q", STACK + i) for i in range(0, size, 8))


@functools.lru_cache(maxsize=None)
def three_threads() -> bytes:
    stack = stack_bytes(1 << 20)
    sps = [STACK + 0x80000, STACK + 0x40000, STACK + 0xC0000]
    return make_core([(100 + i, TEXT + 0x10, sp) for i, sp in enumerate(sps)],
                     [(TEXT, b"", 0x1000, corefile.PF_R | corefile.PF_X),
                      (STACK, stack, len(stack), corefile.PF_R | corefile.PF_W),
                      (VDSO, b"\x7fELF" + b"\x90" * 8188, 0x2000, corefile.PF_R | corefile.PF_X)])


def pipe_of(data: bytes) -> tuple[int, threading.Thread]:
    """The read end of a real pipe a thread writes `data` into, as the kernel does."""
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as f:
            try:
                f.write(data)
            except BrokenPipeError:
                pass
    t = threading.Thread(target=feed)
    t.start()
    return r, t


def stream_bytes(data: bytes, **kw) -> stream.Streamed:
    r, t = pipe_of(data)
    try:
        return stream.stream(r, **kw)
    finally:
        os.close(r)
        t.join()


def test_stream_keeps_stack_windows_and_vdso():
    got = stream_bytes(three_threads(), stack_window=0x1000, keep=1 << 20)
    assert got.errors == [] and got.bytes_read == len(three_threads())
    space = got.space
    assert space.threads() == [100, 101, 102]
    assert space.registers(101)[RSP] == STACK + 0x40000 and space.registers(100)[RIP] == TEXT + 0x10
    for sp in (STACK + 0x80000, STACK + 0x40000, STACK + 0xC0000):
        assert space.read(sp, 8) == struct.pack("<Q", sp)
        assert space.read(sp - RED_ZONE, 8) == struct.pack("<Q", sp - RED_ZONE)
        assert space.read(sp + 0x1000 - 8, 8) == struct.pack("<Q", sp + 0x1000 - 8)
        with pytest.raises(MemoryFault):
            space.read(sp + 0x1000, 8)
    assert space.read(VDSO, 4) == b"\x7fELF"
    assert got.bytes_kept == 3 * (0x1000 + RED_ZONE) + 0x2000
    assert [m.path for m in space.maps()] == ["", "", "[vdso]"]


def test_budget_goes_to_the_crashed_thread_first():
    got = stream_bytes(three_threads(), stack_window=0x10000, keep=0x10000 + 0x2000 + 0x1000)
    space = got.space
    space.read(STACK + 0x80000 + 0x10000 - 8, 8)   # the dumping thread: its whole window
    space.read(VDSO + 0x1FF8, 8)
    with pytest.raises(MemoryFault):
        space.read(STACK + 0x40000 + 0x1000, 8)    # the others share what is left
    assert got.bytes_kept <= 0x10000 + 0x2000 + 0x1000
    assert any("--keep" in e for e in got.errors)


def test_file_backed_bytes_come_from_the_file(tmp_path):
    lib = tmp_path / "lib.so"
    lib.write_bytes(bytes(range(256)) * 32)
    data = make_core([(7, TEXT, STACK + 0x100)],
                     [(TEXT, b"", 0x2000, corefile.PF_R | corefile.PF_X),
                      (STACK, stack_bytes(0x1000), 0x1000, corefile.PF_R | corefile.PF_W)],
                     files=[(TEXT, TEXT + 0x2000, str(lib))])
    path = tmp_path / "core"
    path.write_bytes(data)
    space, size = corefile.open_core(os.open(path, os.O_RDONLY))
    assert size == len(data) and space.layout.errors == []
    assert space.read(TEXT + 0x105, 3) == bytes([5, 6, 7])
    mapping = space.maps()[0]
    assert mapping.is_file and mapping.inode == lib.stat().st_ino and mapping.perms == "r-xp"
    assert space.read(STACK + 0x100, 8) == struct.pack("<Q", STACK + 0x100)
    space.close()


def test_not_a_core():
    for data in (b"hello", b"\x7fELF" + b"\0" * 60):
        got = stream_bytes(data)
        assert got.space is None and "not an" in got.errors[0], got.errors
        assert got.bytes_read == len(data), "drained all the same"


@pytest.mark.parametrize("step", [1, 97])
def test_truncated_anywhere_never_raises(step):
    data = three_threads()
    cut_points = list(range(0, 4096, step)) if step == 97 else [63, 64, 65, 119, 120, 121]
    for cut in cut_points + [len(data) // 2, len(data) - 1]:
        with tempfile.TemporaryFile() as f:
            f.write(data[:cut])
            f.flush()
            f.seek(0)
            got = stream.stream(f.fileno())
        assert got.errors, f"cut at {cut}: no error"


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=2048), st.integers(min_value=0, max_value=4))
def test_garbage_notes_never_raise(garbage, where):
    data = bytearray(three_threads())
    start = 64 + 56 * 4 + where * 7
    data[start:start + len(garbage)] = garbage
    with tempfile.TemporaryFile() as f:
        f.write(bytes(data))
        f.seek(0)
        got = stream.stream(f.fileno(), stack_window=0x1000)
    if got.space is not None:
        for tid in got.space.threads():
            regs = got.space.registers(tid)
            try:
                got.space.read(regs.get(RSP, 0), 8)
            except MemoryFault:
                pass


def test_a_file_mapping_with_no_segment_is_read_from_its_file(tmp_path):
    """gdb's gcore writes no PT_LOAD for a file mapping the process never
    wrote to: NT_FILE names it, and its permissions are the file's own."""
    lib = tmp_path / "lib.so"
    lib.write_bytes(open(sys.executable, "rb").read())
    first = ElfFile(lib.read_bytes()).first_load(0)
    data = make_core([(7, TEXT, STACK + 0x100)],
                     [(STACK, stack_bytes(0x1000), 0x1000, corefile.PF_R | corefile.PF_W)],
                     files=[(TEXT, TEXT + 0x2000, str(lib)), (TEXT + 0x4000, TEXT + 0x5000,
                                                              str(tmp_path / "gone.so"))])
    path = tmp_path / "core"
    path.write_bytes(data)
    space, _ = corefile.open_core(os.open(path, os.O_RDONLY))
    try:
        mapping = space.maps()[0]
        assert (mapping.start, mapping.end, mapping.path) == (TEXT, TEXT + 0x2000, str(lib))
        assert mapping.perms == corefile._perms(first.flags)
        assert space.read(TEXT, 16) == lib.read_bytes()[:16]
        assert len(space.maps()) == 2  # the file not found is left out: nothing says what it held
        with pytest.raises(MemoryFault):
            space.read(TEXT + 0x4000, 8)
    finally:
        space.close()


@pytest.mark.parametrize("door", ["file", "stream"])
def test_read_u64_reads_what_read_reads(tmp_path, door):
    """The word reader's windows (copy_at) serve what read() serves, and
    fault where it faults: at the ends of a stream's kept windows too."""
    data = three_threads()
    if door == "file":
        path = tmp_path / "core"
        path.write_bytes(data)
        space, _ = corefile.open_core(os.open(path, os.O_RDONLY))
    else:
        space = stream_bytes(data, stack_window=0x1000, keep=1 << 20).space
    try:
        for sp in (STACK + 0x80000, STACK + 0x40000, STACK + 0xC0000):
            for addr in (sp - RED_ZONE - 8, sp - 4, sp, sp + 8, sp + 0x1000 - 8, sp + 0x1000 - 4,
                         sp + 0x1000, sp + corefile.WINDOW - 4, sp + corefile.WINDOW):
                try:
                    want = struct.unpack("<Q", space.read(addr, 8))[0]
                except MemoryFault:
                    with pytest.raises(MemoryFault):
                        space.read_u64(addr)
                else:
                    assert space.read_u64(addr) == want, hex(addr)
        start, end, window = space.copy_at(STACK + 0x80000)
        assert start == STACK + 0x80000 and window[:8] == struct.pack("<Q", start)
        assert end - start == len(window) <= corefile.WINDOW
        assert space.copy_at(STACK + (2 << 20))[2] == b""  # past every segment
    finally:
        space.close()


def test_window_of_an_sp_at_the_start_of_its_segment():
    """The red zone below sp lies outside the segment: the window is kept all the same."""
    data = make_core([(7, TEXT, STACK)], [(STACK, stack_bytes(0x4000), 0x4000, corefile.PF_R)])
    got = stream_bytes(data, stack_window=0x1000)
    assert got.space.read(STACK, 8) == struct.pack("<Q", STACK)
    assert got.bytes_kept == 0x1000


def use_space(space) -> None:
    """What unwinding asks of a core's space: maps, threads, registers, reads."""
    for mapping in space.maps()[:16]:
        space.file_for(mapping)
        try:
            space.read(mapping.start, 16)
        except MemoryFault:
            pass
    for tid in space.threads()[:16]:
        sp = space.registers(tid).get(RSP, 0)
        space.copy_at(sp)
        for read in (lambda: space.read(sp, 64), lambda: space.read_u64(sp)):
            try:
                read()
            except MemoryFault:
                pass


def both_doors(data: bytes, tmp: str) -> None:
    """The core read from a file (`collector core FILE`) and streamed (the
    kernel's pipe): CoreError or a space, nothing else."""
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        space, _ = corefile.open_core(os.open(tmp, os.O_RDONLY))
    except corehead.CoreError:
        pass
    else:
        try:
            use_space(space)
        finally:
            space.close()
    got = stream_bytes(data, stack_window=0x1000)
    if got.space is not None:
        try:
            use_space(got.space)
        finally:
            got.space.close()


HUGE = st.sampled_from([2**63, 2**64 - 1, 2**40, 2**32 - 1, 1 << 30]) | st.integers(0, 2**64 - 1)


@functools.lru_cache(maxsize=None)
def with_files() -> bytes:
    stack = stack_bytes(0x4000)
    return make_core([(7, TEXT + 0x10, STACK + 0x2000)],
                     [(TEXT, b"", 0x2000, corefile.PF_R | corefile.PF_X),
                      (STACK, stack, len(stack), corefile.PF_R | corefile.PF_W)],
                     files=[(TEXT, TEXT + 0x1000, "/bin/true"),
                            (TEXT + 0x1000, TEXT + 0x2000, "/dev/zero")])


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(range(4)), st.sampled_from((8, 16, 32, 40)), HUGE)
def test_program_header_fields_huge(index, field, value):
    """A segment's offset, address or sizes anywhere up to 2**64."""
    data = bytearray(with_files())
    struct.pack_into("<Q", data, 64 + 56 * min(index, 2) + field, value)
    with tempfile.TemporaryDirectory() as d:
        both_doors(bytes(data), f"{d}/core")


PATHS = st.sampled_from([b"/bin/true", b"/bin/true", b"/dev/zero", b"/tmp", b"/proc/self/fd/0"])


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**64 - 1), st.sampled_from([PAGE, 1]) | HUGE,
       st.lists(st.tuples(st.just(TEXT), st.just(TEXT + 0x1000) | HUGE, st.just(0) | HUGE,
                          PATHS | st.binary(max_size=40)) | st.tuples(HUGE, HUGE, HUGE, PATHS),
                min_size=1, max_size=6))
def test_file_list_of_any_shape(count, page, entries):
    """NT_FILE with any count (the true one most of the time), page size,
    ranges (often the text segment's, which is read from the file) and
    path bytes (naming nothing, a device, undecodable bytes)."""
    count = count if count % 4 == 0 else len(entries)
    body = struct.pack("<QQ", count, page)
    body += b"".join(struct.pack("<QQQ", s, e, o) for s, e, o, _ in entries)
    body += b"".join(p + b"\0" for *_, p in entries)
    data = make_core([(7, TEXT, STACK + 0x100)],
                     [(TEXT, b"", 0x1000, corefile.PF_R | corefile.PF_X),
                      (STACK, stack_bytes(0x1000), 0x1000, corefile.PF_R)], file_note=body)
    with tempfile.TemporaryDirectory() as d:
        both_doors(data, f"{d}/core")
