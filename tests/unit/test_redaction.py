"""One redaction rule for every deployable's logs, applied to the final line."""

from __future__ import annotations

import json
import logging
import secrets
import sys

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from ticker_adapters.redaction import redact, redacted_json

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
    # Named without the value: ids must be the same in every worker's collection.
    ids=lambda text: text.replace(VALUE, "VALUE"),
)
def test_every_form_of_a_secret_is_masked(text: str) -> None:
    redacted = redact(text)
    assert VALUE not in redacted
    assert "***" in redacted


def test_what_is_not_secret_is_left_alone() -> None:
    text = "api_key=k1 account=acct0 secret_arn=arn:aws:secretsmanager:x token_count=3"
    assert redact(text) == text


def test_the_serializer_hook_redacts_the_final_line() -> None:
    # Given a log record's fields with a secret in a nested, non-string extra
    fields = {"message": "opened", "session": {"access_token": VALUE, "user": "AB1234"}}
    # When it is serialized as a log line
    line = redacted_json(fields)
    # Then the line is masked, still JSON, the rest intact
    assert VALUE not in line
    assert json.loads(line)["session"] == {"access_token": "***", "user": "AB1234"}


def test_a_powertools_formatter_with_the_hook_masks_messages_extras_and_tracebacks() -> None:
    formatter = LambdaPowertoolsFormatter(json_serializer=redacted_json)
    try:
        raise ValueError(f"postgresql://app:{VALUE}@db/ticks")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, "", 0, "boom", (), sys.exc_info())
    record.dsn = {"password": VALUE}
    line = formatter.format(record)
    assert VALUE not in line
    assert json.loads(line)["dsn"] == {"password": "***"}
