"""Kite Connect's two checksums, defined once: the login exchange and postbacks.

Both are the hex SHA-256 of three strings run together. The app proves it
holds the API secret when it exchanges a login's ``request_token`` for the
day's access token (``POST /session/token``); Kite proves a postback is its
own the same way, over the order id and timestamp.
"""

from __future__ import annotations

import hashlib


def _sha256_hex(*parts: str) -> str:
    return hashlib.sha256("".join(parts).encode("utf-8")).hexdigest()


def session_checksum(api_key: str, request_token: str, api_secret: str) -> str:
    """``POST /session/token``'s ``checksum``: sha256(api_key + request_token + api_secret)."""
    return _sha256_hex(api_key, request_token, api_secret)


def postback_checksum(order_id: str, order_timestamp: str, api_secret: str) -> str:
    """The ``checksum`` a postback carries: sha256(order_id + order_timestamp + api_secret)."""
    return _sha256_hex(order_id, order_timestamp, api_secret)
