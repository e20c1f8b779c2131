"""Kite's checksums: the login exchange's and the postbacks'."""

from __future__ import annotations

import hashlib

from ticker_core.kite_checksums import postback_checksum, session_checksum


def test_the_checksums_are_the_sha256_of_the_three_strings_run_together() -> None:
    # Given Kite's definitions, When the checksums are computed, Then they match
    assert session_checksum("k", "r", "s") == hashlib.sha256(b"krs").hexdigest()
    assert (
        postback_checksum("1", "2024-06-03 09:15:00", "s")
        == hashlib.sha256(b"12024-06-03 09:15:00s").hexdigest()
    )
    # And the order of the parts matters
    assert session_checksum("r", "k", "s") != session_checksum("k", "r", "s")
