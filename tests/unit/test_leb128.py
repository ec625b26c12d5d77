"""The engine's one LEB128 reader and writer: round trips, and garbage ends
with LebError after MAX_BYTES, however long the run of continuation bytes."""
import time

import pytest
from hypothesis import given, strategies as st

from unwinder.leb128 import MAX_BYTES, LebError, encode_sleb, encode_uleb, sleb, uleb


@given(st.integers(0, 2**128))
def test_unsigned_round_trip(value):
    encoded = encode_uleb(value)
    assert uleb(b"\x55" + encoded + b"\xaa", 1) == (value, 1 + len(encoded))


@given(st.integers(-2**127, 2**127))
def test_signed_round_trip(value):
    encoded = encode_sleb(value)
    assert sleb(encoded + b"\xaa", 0) == (value, len(encoded))


@pytest.mark.parametrize("read", [uleb, sleb])
def test_a_long_run_of_continuation_bytes_stops_at_the_cap(read):
    start = time.perf_counter()
    with pytest.raises(LebError):
        read(b"\x80" * 100_000 + b"\x00", 0)
    assert time.perf_counter() - start < 0.01
    value, pos = read(b"\x80" * (MAX_BYTES - 1) + b"\x00", 0)
    assert (value, pos) == (0, MAX_BYTES)


def test_truncated_is_an_index_error_for_the_caller_to_fold():
    with pytest.raises(IndexError):
        uleb(b"\x80\x80", 0)
    with pytest.raises(IndexError):
        sleb(b"", 0)


def test_no_unsigned_encoding_of_a_negative_number():
    with pytest.raises(ValueError):
        encode_uleb(-1)
