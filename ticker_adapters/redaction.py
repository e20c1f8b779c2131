"""Secrets masked in every log line, the last line of defence, for every deployable.

Nothing logs a secret on purpose: access tokens travel only in handshake
URLs and headers nothing logs, credentials are types whose ``repr`` masks
them. This catches the accidents (an exception message quoting a URL, a
dict passed as an extra, a library's debug line) by masking, in the *final*
text of a log line (the JSON, after every field, nested value and traceback
is in it), the values of:

* secret-named keys, however they are written: ``access_token=x``,
  URL-encoded ``access_token%3Dx``, ``access_token: x``, JSON
  ``"access_token": "x"`` (escaped quotes included), Python ``'password': 'x'``;
  the names: access/request/refresh tokens, api/client secrets, Kite's
  ``checksum``, passwords, AWS secret keys and session tokens;
* ``Authorization: token api_key:access_token`` (Kite's header) and
  ``Bearer x``;
* the password in a URL's userinfo (``scheme://user:<password>@host``).

:func:`redact` is the rule; :func:`redacted_json` is the hook both the
feed's and the Lambdas' Powertools loggers use: their formatter's
``json_serializer``, the step that turns a record's fields into the final
line, so the rule sees exactly the text that is written. It is the formatter
itself, not a handler around it, so it survives Powertools reusing a logger
(one per service name) when a handler module is imported again. This module
imports only the standard library.
"""

from __future__ import annotations

import json
import re

MASK = "***"

_KEYS = (
    r"access_token|request_token|refresh_token|api_secret|client_secret|checksum"
    r"|password|passwd|(?:aws_)?secret_access_key|(?:aws_)?session_token"
)
# key, then the key's closing quote (maybe escaped), the separator (=, URL-encoded =, :)
# and the value's opening quote; the value runs to a delimiter (URL-encoded & included).
_KEY_VALUE = re.compile(
    rf"(?P<key>(?:{_KEYS}))"  # no word boundary: %3Faccess_token
    r"(?P<sep>(?:\\?[\"'])?\s*(?:=|%3[dD]|:)\s*(?:\\?[\"'])?)"
    r"(?P<value>(?:%(?!26)[0-9A-Fa-f]{2}|[^\s&\"'\\,;}\)\]%])+)",
    re.IGNORECASE,
)
# Kite's "Authorization: token api_key:access_token" (the api_key is not secret).
_KITE_HEADER = re.compile(r"(?P<head>\btoken\s+[^:\s\"'\\]+:)(?P<value>[^\s\"'\\,;]+)", re.I)
_BEARER = re.compile(r"(?P<head>\bbearer\s+)(?P<value>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/?#@\s\"'\\]+:)(?P<value>[^@/\s\"'\\]+)(?=@)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every secret-looking value replaced by ``***``."""
    text = _KEY_VALUE.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)
    text = _KITE_HEADER.sub(lambda m: f"{m['head']}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def redacted_json(value: object) -> str:
    """A log line: ``value`` as compact JSON (unknown types as ``str``), then :func:`redact`.

    Pass it as a Powertools formatter's ``json_serializer``.
    """
    return redact(json.dumps(value, default=str, separators=(",", ":")))
