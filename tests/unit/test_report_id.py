"""A report's id: a random UUID as uuid.uuid4 makes one (version 4, RFC
4122 variant, canonical form), made without importing uuid."""
import uuid

from collector.report import random_uuid


def test_report_ids_are_random_version_4_uuids():
    ids = [random_uuid() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        u = uuid.UUID(text)
        assert str(u) == text and u.version == 4 and u.variant == uuid.RFC_4122
    # every bit outside version and variant varies
    bits = {i for text in ids for i, bit in enumerate(f"{uuid.UUID(text).int:0128b}")
            if bit == "1"}
    fixed = {48, 49, 50, 51, 64, 65}  # version nibble 0100, variant 10
    assert bits == (set(range(128)) - fixed) | {49, 64}
