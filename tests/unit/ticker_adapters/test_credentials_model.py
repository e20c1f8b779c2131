"""Pure parts of the credential vault: token expiry and secret-safe representations."""

import secrets
from datetime import UTC, datetime

import pytest

from ticker_adapters.credentials import ApiCredentials, KiteSession, next_token_expiry


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
    # Then it is the first 06:00 IST strictly after issue
    assert next_token_expiry(issued_utc) == expires_utc


def test_naive_issue_time_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_token_expiry(datetime(2026, 11, 27, 8, 0))


def test_reprs_never_show_secrets() -> None:
    # Given credentials holding generated secrets
    api_secret, token = secrets.token_hex(16), secrets.token_hex(16)
    creds = ApiCredentials(api_key="key1", api_secret=api_secret)
    issued = datetime(2026, 11, 27, 2, 30, tzinfo=UTC)
    session = KiteSession("key1", token, "AB1234", issued, next_token_expiry(issued))
    # When they are printed (as a log line or a traceback would), Then no secret appears
    for text in (repr(creds), str(creds), repr(session), str(session)):
        assert api_secret not in text
        assert token not in text
    assert "key1" in repr(creds)
    # And expiry is judged against the instant given
    assert not session.is_expired(issued)
    assert session.is_expired(session.expires_at)
