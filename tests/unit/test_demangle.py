"""unwinder.symbols.demangle against binutils' `c++filt -i` (libiberty, which
reads C++, Rust legacy and Rust v0, without the verbose details: the form
addr2line -C and gdb print): for every name c++filt demangles, ours is the
same; for every name it leaves alone, ours is None."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unwinder.symbols.demangle import demangle

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
pytestmark = pytest.mark.skipif(shutil.which("c++filt") is None, reason="needs c++filt")

RUST_LEGACY = [
    "_ZN3std2rt10lang_start17h3c6a7bd3a1f1fd5dE",
    "_ZN4core3ptr85drop_in_place$LT$std..rt..lang_start$LT$$LP$$RP$$GT$..$u7b$$u7b$"
    "closure$u7d$$u7d$$GT$17h02a996811f781011E",
    "_ZN71_$LT$Test$u20$$u2b$$u20$$u27$static$u20$as$u20$foo..Bar$LT$Test$GT$$GT$"
    "3bar17h930b740aa94f1d3aE",
    "_ZN5alloc5boxed16Box$LT$T$C$A$GT$3new17h0123456789abcdefE",
]
RUST_V0 = [
    "_RNvC6_123foo3bar",
    "_RNvNtCs1234_7mycrate5inner3bar",
    "_RNqCs4fqI2P2rA04_11utf8_identsu30____7hkackfecea1cbdathfdh9hlq6y",
    "_RNCNCNgCs6DXkGYLi8lr_2cc5spawn00B5_",
    "_RNCINkXs25_NgCsbmNqQUJIY6D_4core5sliceINyB9_4IterhENuNgNoBb_4iter8iterator8Iterator"
    "9rpositionNCNgNpB9_6memchr7memrchrs_0E0Bb_",
    "_RINbNbCskIICzLVDPPb_5alloc5alloc8box_freeDINbNiB4_5boxed5FnBoxuEp6OutputuEL_"
    "ECs1iopQbuBiw2_3std",
    "_RMC0INtC8arrayvec8ArrayVechKj7b_E",
    "_RNvMsr_NtCs3ssYzQotkvD_3std4pathNtB5_7PathBuf3newCs15kBYyAo9fc_7mycrate",
    "_RNvXs2_Cs1234_7mycrateINtB5_3FooReENtNtCs4_4core3fmt5Debug3fmt",
    "_RINvNtCs123_4core3ptr13drop_in_placeINtNtCs4_5alloc3vec3VecmEEB6_",
    "_RINvCs1234_7mycrate3fooFG0_RL1_hRL0_tEuEB2_",
    "_RINvCs1234_7mycrate3fooFUKCRhEuEB2_",
    "_RINvCs1234_7mycrate3fooDNtB2_3BarEL_EB2_",
    "_RINvCs1234_7mycrate3fooSzEB2_.llvm.12345",
    "_RINvCs1234_7mycrate3fooTaxEEB2_",
    "_RINvCs1234_7mycrate3fooTaEEB2_",
    "_RINvCs1234_7mycrate3fooQOPdEB2_",
]
NOT_MANGLED = ["main", "_start", "__libc_start_main", "_Z", "_R", "_RNv", "_ZN3foo",
               "_RINvCs1234_7mycrate3fooFKu6_rust_callTjQhEEB2_"]


def cxxfilt(names: list[str]) -> list[str]:
    r = subprocess.run(["c++filt", "-i"], input="\n".join(names) + "\n", capture_output=True,
                       text=True, check=True)
    return r.stdout.splitlines()


def check(names: list[str]):
    for name, theirs in zip(names, cxxfilt(names), strict=True):
        ours = demangle(name)
        if theirs == name:
            assert ours is None, f"{name}: c++filt leaves it, we say {ours!r}"
        else:
            assert ours == theirs, f"{name}: ours {ours!r}, c++filt {theirs!r}"


@pytest.fixture(scope="module")
def cxx_symbols(tmp_path_factory) -> list[str]:
    """The mangled names of a real C++ program (templates, std::, lambdas)."""
    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    out = tmp_path_factory.mktemp("cxx") / "inline"
    subprocess.run(["g++", "-O0", "-g", "-pthread", str(FIXTURES / "inline.cc"), "-o", str(out)],
                   check=True)
    nm = subprocess.run(["nm", "--defined-only", "--format=posix", str(out)],
                        capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in nm.splitlines() if line.startswith("_Z")]


def test_cxx_equals_cxxfilt(cxx_symbols):
    assert len(cxx_symbols) >= 3
    check(cxx_symbols)
    assert "shop::Basket<double>::pay(int)" in map(demangle, cxx_symbols)


def test_rust_legacy_equals_cxxfilt():
    check(RUST_LEGACY)
    assert all(demangle(n) for n in RUST_LEGACY)


def test_rust_v0_equals_cxxfilt():
    check(RUST_V0)
    assert all(demangle(n) for n in RUST_V0)


def test_not_mangled_is_none():
    check(NOT_MANGLED)


def test_symbol_version_is_kept():
    name = "_ZN4shop6Basket3payEi"
    assert demangle(name + "@@V1") == demangle(name) + "@@V1"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["_R", "_ZN", "_Z"]), st.text(alphabet="0123456789_ABCDEFGHIKLMNOPQRSTUVXYZabcdefhijklmnopsuvxyz$.", max_size=60))
def test_garbage_never_raises(prefix, rest):
    out = demangle(prefix + rest)
    assert out is None or isinstance(out, str)
