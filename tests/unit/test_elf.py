"""The ELF reader on garbage: random bytes and a real file with bytes
flipped give ElfError or a usable object, never another exception."""
import mmap

from hypothesis import given, settings, strategies as st

from unwinder.elf import ElfError, ElfFile
from unwinder.symbols.symtab import SymbolTable

with open("/bin/true", "rb") as f:
    TRUE = f.read()


def use(data: bytes) -> None:
    try:
        elf = ElfFile(data, "fuzz")
    except ElfError:
        return
    try:
        elf.build_id()
        elf.debuglink()
        elf.first_load(0)
        for table in (".symtab", ".dynsym"):
            table = SymbolTable(*elf.function_table(table))
            table.lookup(0x1000)
        for name in list(elf.sections)[:32]:
            elf.section_data(name)
            elf.content_size(elf.sections[name])
    except ElfError:
        pass


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=512))
def test_random_bytes(data):
    use(b"\x7fELF\x02\x01" + data)


# the ELF and program headers open the file, the section headers end it
WHERE = st.one_of(st.integers(0, 4095), st.integers(len(TRUE) - 4096, len(TRUE) - 1))


@settings(max_examples=400, deadline=1000)
@given(st.lists(st.tuples(WHERE, st.integers(0, 255)), min_size=1, max_size=16))
def test_real_file_with_bytes_flipped(flips):
    data = bytearray(TRUE)
    for offset, value in flips:
        data[offset] = value
    use(bytes(data))


def test_the_real_file_reads():
    with open("/bin/true", "rb") as f:
        elf = ElfFile(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ), "/bin/true")
    assert elf.build_id() and len(elf.build_id()) == 40
    assert ".text" in elf.sections
