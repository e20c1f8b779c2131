"""Pure parts of the credential vault: secret-safe representations."""

import secrets
from datetime import UTC, datetime

from ticker_adapters.credentials import ApiCredentials, KiteSession
from ticker_core.kite import next_token_expiry


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
