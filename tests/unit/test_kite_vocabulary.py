"""Kite's vocabulary (ticker_core.kite) and the subscription rules built on it."""

from datetime import UTC, datetime, timedelta

import pytest

from ticker_core.kite import (
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    MODES,
    SEGMENT_CODES,
    Segment,
    next_token_expiry,
    wider_mode,
)
from ticker_core.kite_wire import MODE_PACKET_BYTES, PacketKind
from ticker_core.subscriptions import (
    AtmWindowRule,
    SubscriptionError,
    merge_instruments,
    validate_mode,
    validate_owner,
    validate_token,
)


def test_modes_are_ordered_narrowest_first_and_the_wider_one_wins() -> None:
    # Given Kite's three modes, When two are combined, Then the wider is kept, either way round
    assert MODES == (MODE_LTP, MODE_QUOTE, MODE_FULL)
    for a in MODES:
        for b in MODES:
            assert (
                wider_mode(a, b) == wider_mode(b, a) == MODES[max(MODES.index(a), MODES.index(b))]
            )


def test_a_modes_packet_size_is_its_tradable_packets_length() -> None:
    # Then the load an instrument puts on its connection is the wire layout's, not a copy
    assert MODE_PACKET_BYTES == {"ltp": 8, "quote": 44, "full": 184}
    assert MODE_PACKET_BYTES[MODE_FULL] == PacketKind.FULL.length


def test_segment_codes_by_name_are_the_segment_enum() -> None:
    assert SEGMENT_CODES["NFO"] == Segment.NFO == 2
    assert {SEGMENT_CODES[s] for s in ("CDS", "BCD", "NCO", "MCXSX")} == {3, 6, 12, 8}
    assert len(SEGMENT_CODES) == len(Segment)


@pytest.mark.parametrize(
    ("issued_utc", "expires_utc"),
    [
        # 08:00 IST login -> 06:00 IST next day (00:30 UTC)
        (datetime(2026, 11, 27, 2, 30, tzinfo=UTC), datetime(2026, 11, 28, 0, 30, tzinfo=UTC)),
        # 05:59 IST (before the cut-off) -> 06:00 IST the same day
        (datetime(2026, 11, 27, 0, 29, tzinfo=UTC), datetime(2026, 11, 27, 0, 30, tzinfo=UTC)),
        # exactly 06:00 IST -> the next day's 06:00
        (datetime(2026, 11, 27, 0, 30, tzinfo=UTC), datetime(2026, 11, 28, 0, 30, tzinfo=UTC)),
        # 23:00 IST -> 06:00 IST next morning
        (datetime(2026, 11, 27, 17, 30, tzinfo=UTC), datetime(2026, 11, 28, 0, 30, tzinfo=UTC)),
    ],
)
def test_token_expires_at_the_next_six_am_ist(issued_utc: datetime, expires_utc: datetime) -> None:
    # Given a token issued at some instant, When its expiry is computed
    # Then it is the first 06:00 IST strictly after issue, given in UTC
    expiry = next_token_expiry(issued_utc)
    assert expiry == expires_utc
    assert expiry.utcoffset() == timedelta(0)


def test_naive_issue_time_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_token_expiry(datetime(2026, 11, 27, 8, 0))


def test_owners_requests_merge_to_the_widest_mode_per_instrument() -> None:
    # Given three owners' requests, two on one instrument
    requests = [(256265, "ltp"), (256265, "full"), (738561, "quote"), (256265, "quote")]
    # When merged, Then each instrument is asked for once, in the widest mode
    assert merge_instruments(requests) == {256265: "full", 738561: "quote"}


@pytest.mark.parametrize(
    ("check", "field"),
    [
        (lambda: validate_token(0), "instrument_token"),
        (lambda: validate_token(2**32), "instrument_token"),
        (lambda: validate_token(True), "instrument_token"),
        (lambda: validate_mode("depth"), "mode"),
        (lambda: validate_owner("a b"), "owner"),
        (lambda: AtmWindowRule("nifty", 5, 1, "ltp", "a").validate(), "underlying"),
        (lambda: AtmWindowRule("NIFTY", 0, 1, "ltp", "a").validate(), "strikes_each_side"),
        (lambda: AtmWindowRule("NIFTY", 5, 9, "ltp", "a").validate(), "expiries"),
        (lambda: AtmWindowRule("NIFTY", 5, 1, "deep", "a").validate(), "mode"),
    ],
)
def test_invalid_requests_name_the_field(check: object, field: str) -> None:
    # Given an invalid request, When it is checked, Then the error names the field
    with pytest.raises(SubscriptionError, match=field):
        check()  # type: ignore[operator]


def test_valid_requests_pass() -> None:
    validate_token(2**32 - 1)
    validate_mode("quote")
    validate_owner("strategy-a@desk:1")
    AtmWindowRule("BANKNIFTY", 50, 6, "full", "greeks").validate()
