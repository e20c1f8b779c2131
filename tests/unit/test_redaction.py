"""One redaction rule for every deployable's logs, applied to the final line."""

from __future__ import annotations

import io
import json
import logging
import secrets

import pytest

from ticker_adapters.redaction import RedactingStreamHandler, redact

VALUE = "v" + secrets.token_hex(8)  # a made-up credential, new each run


@pytest.mark.parametrize(
    "text",
    [
        f"GET /ws?api_key=k1&access_token={VALUE}&x=1",
        f"url=wss%3A%2F%2Fws%3Faccess_token%3D{VALUE}%26api_key%3Dk",
        f"access_token: {VALUE}",
        f'{{"access_token": "{VALUE}"}}',
        f'"msg":"payload {{\\"access_token\\": \\"{VALUE}\\"}}"',
        f"{{'api_secret': '{VALUE}'}}",
        f"Authorization: token k1:{VALUE}",
        f"Authorization: Bearer {VALUE}",
        f"dsn postgresql://app:{VALUE}@db.internal:5432/ticks",
        f"password={VALUE}",
        f"PASSWORD = {VALUE}",
        f"aws_secret_access_key={VALUE}",
        f'"AWS_SESSION_TOKEN": "{VALUE}"',
        f"request_token={VALUE} checksum={VALUE}",
        f'"password": {VALUE}',
    ],
)
def test_every_form_of_a_secret_is_masked(text: str) -> None:
    redacted = redact(text)
    assert VALUE not in redacted
    assert "***" in redacted


def test_what_is_not_secret_is_left_alone() -> None:
    text = "api_key=k1 account=acct0 secret_arn=arn:aws:secretsmanager:x token_count=3"
    assert redact(text) == text


def test_the_handler_redacts_the_final_line_of_any_formatter() -> None:
    # Given a JSON formatter and a record whose secret sits in a non-string extra
    class Json(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return json.dumps({"msg": record.getMessage(), "extra": record.__dict__["session"]})

    out = io.StringIO()
    handler = RedactingStreamHandler(out)
    handler.setFormatter(Json())
    record = logging.LogRecord("t", logging.INFO, "", 0, "opened", (), None)
    record.session = {"access_token": VALUE, "user": "AB1234"}
    # When it is written
    handler.emit(record)
    # Then the line that reached the stream is masked, the rest intact
    line = json.loads(out.getvalue())
    assert VALUE not in out.getvalue()
    assert line["extra"] == {"access_token": "***", "user": "AB1234"}
