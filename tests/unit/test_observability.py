"""The Lambdas' Powertools logger redacts its final lines with the feed's rule."""

from __future__ import annotations

import json
import secrets

import pytest

from lambdas.common.observability import Observability


def test_lambda_log_lines_are_redacted_by_the_shared_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a function's logger and a secret in a nested extra and in a message
    token = secrets.token_hex(16)
    obs = Observability(f"redaction-{secrets.token_hex(4)}")
    # When they are logged
    obs.logger.info(f"Authorization: Bearer {token}", extra={"db": {"password": token}})
    # Then the JSON line on stdout holds neither, and is still JSON
    out = capsys.readouterr().out
    assert token not in out
    line = json.loads(out.splitlines()[-1])
    assert line["db"] == {"password": "***"}
    assert line["message"] == "Authorization: Bearer ***"
