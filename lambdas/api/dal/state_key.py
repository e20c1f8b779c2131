"""The login-state signing key, from Secrets Manager.

The secret is generated when the stack is deployed (a random string nobody
types or sees) and only this function may read it. It is read on first use
and kept for ``cache_seconds``, so a rotated key is used within that time;
states signed with the old key then fail as tampered, and the person logging
in simply starts again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from lambdas.api.login_state import MIN_KEY_BYTES


class StateKeyError(Exception):
    """The key cannot be read or is too short to sign with."""


class SecretsManagerStateKey:
    """A callable returning the key bytes."""

    def __init__(
        self,
        secrets_client: Any,
        secret_id: str,
        *,
        cache_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets = secrets_client
        self._secret_id = secret_id
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._key: bytes | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        """The current key."""
        with self._lock:
            now = self._clock()
            if self._key is None or now - self._read_at >= self._cache_seconds:
                value = self._secrets.get_secret_value(SecretId=self._secret_id).get("SecretString")
                key = value.encode() if isinstance(value, str) else b""
                if len(key) < MIN_KEY_BYTES:
                    raise StateKeyError(f"the login state secret is under {MIN_KEY_BYTES} bytes")
                self._key, self._read_at = key, now
            return self._key
