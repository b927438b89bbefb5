"""Stream keys are part of every broadcaster's setup: the derivation must never change."""

import hashlib
import hmac
import uuid

import pytest

from onair.streamkeys import check_seed, derive_stream_key

SEED = "a-seed-of-at-least-thirty-two-characters"


def test_the_key_is_the_documented_hmac_as_a_guid() -> None:
    digest = hmac.new(SEED.encode(), b"news/evening/0b4c1f3e-7d3a-4c55-9a0e-5f4a3b2c1d00", hashlib.sha256).digest()
    key = derive_stream_key(SEED, "news", "evening", "0b4c1f3e-7d3a-4c55-9a0e-5f4a3b2c1d00")
    assert key == str(uuid.UUID(bytes=digest[:16], version=4))
    assert key == "ff8e8399-c4d7-4999-8dad-eadf24a7396b"  # keys handed out before stay valid


def test_a_recreated_job_gets_a_new_key() -> None:
    assert derive_stream_key(SEED, "news", "evening", "uid-1") != derive_stream_key(SEED, "news", "evening", "uid-2")


def test_short_seeds_are_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="ONAIR_X: the stream-key seed must be at least 32"):
        check_seed("short", "ONAIR_X")
