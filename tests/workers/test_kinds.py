"""The hash-kind registry's own rules, and what derives from it (workers/kinds.py)."""
import hashlib

import pytest

from workers import kinds
from workers.hashing import ComputedHashes, HashesFormatError, hash_file


def test_every_kind_can_be_asked_of_civitai_directly_or_through_a_prefix():
    # models_catalog.services.lookup sends a query's first candidate in this form; a kind without one
    # would leave the lookup with nothing to send.
    forms = {k.name: kinds.by_hash_form(k.name).name for k in kinds.REGISTRY}
    assert forms["SHA256"] == "SHA256" and forms["AutoV3"] == "AutoV3"
    assert forms["AutoV3_full"] == "AutoV3"  # Civitai keeps only the first 12
    assert forms["SHA256_12"] == "AutoV2"  # by-hash does not match SHA256_12 yet; its first 10 are AutoV2


def test_sha256_12_is_a_short_hash_derived_from_sha256_that_civitai_does_not_match_yet():
    k = kinds.BY_NAME["SHA256_12"]
    assert (k.field, k.length, k.prefix_of, k.by_hash, k.civitai) == ("sha256_12", 12, "SHA256", False, None)
    assert k.strength is kinds.Strength.SHORT_HASH
    assert k not in kinds.CIVITAI_KINDS  # not printed as if Civitai had it
    assert 12 in kinds.BY_HASH_LENGTHS  # still a length by-hash takes (as AutoV3)


def test_twelve_hex_is_ambiguous_between_autov3_and_sha256_12():
    assert kinds.kinds_of_length(12) == ("AutoV3", "SHA256_12")


def test_derived_kinds_are_shorter_than_their_parent():
    for k in kinds.DERIVED:
        assert k.length < kinds.BY_NAME[k.prefix_of].length, k.name


def test_with_derived_fills_every_prefix_kind_from_its_parent():
    sha = hashlib.sha256(b"x").hexdigest()
    fields = kinds.with_derived({**kinds.empty_fields(), "sha256": sha})
    assert (fields["autov2"], fields["sha256_12"]) == (sha[:10], sha[:12])
    assert fields["autov3"] == ""  # its parent is unknown


@pytest.fixture
def record(tmp_path):
    data = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      tensor bytes"
    path = tmp_path / "m.safetensors"
    path.write_bytes(data)
    return hash_file(path), hashlib.sha256(data).hexdigest()


def test_engine_record_reads_derived_kinds_off_the_hash_it_keeps(record):
    hashes, sha = record
    assert (hashes.autov2, hashes.sha256_12) == (sha[:10], sha[:12])
    assert hashes.autov3 == hashes.autov3_full[:12]
    with pytest.raises(AttributeError):
        hashes.sha256_13  # noqa: B018 - only registry kinds are derived


def test_a_pushed_sha256_12_that_disagrees_with_the_sha256_is_refused(record):
    hashes, sha = record
    doc = hashes.to_json()
    assert ComputedHashes.from_json({**doc, "SHA256_12": sha[:12].upper()}) == hashes
    with pytest.raises(HashesFormatError, match="SHA256_12"):
        ComputedHashes.from_json({**doc, "SHA256_12": "0" * 12})
