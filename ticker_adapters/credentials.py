"""The credential vault: Kite API secrets and daily access tokens.

Stored in Secrets Manager, one secret per account and purpose, each value an
AWS Encryption SDK message (see :mod:`ticker_adapters.envelope`) bound to the
account and purpose. Shared by the feed container (which reads tokens and
picks up rotation without a restart) and the Lambdas (the login callback
writes tokens, the API reads them). Imports only the AWS SDKs.

Secret names: ``{prefix}/{account_id}/api`` (API key and secret, long-lived)
and ``{prefix}/{account_id}/session`` (the day's access token).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ticker_adapters.envelope import Cipher, EnvelopeError, KmsEnvelopeCipher

if TYPE_CHECKING:
    from ticker_adapters.settings import VaultSettings

FORMAT_VERSION = 1
PURPOSE_API = "kite-api-credentials"
PURPOSE_SESSION = "kite-session"
ACCOUNT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class CredentialError(Exception):
    """Base class for vault failures."""


class CredentialNotFoundError(CredentialError):
    """No credential of that kind is stored for the account."""


class CredentialCorruptError(CredentialError):
    """A stored value cannot be decrypted or parsed (tampered, moved, or wrong key)."""


def _mask(value: str) -> str:
    return f"{value[:3]}…({len(value)} chars)" if value else "(empty)"


@dataclass(frozen=True)
class ApiCredentials:
    """An account's Kite Connect app: API key (public) and API secret."""

    api_key: str
    api_secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"ApiCredentials(api_key={self.api_key!r}, api_secret={_mask(self.api_secret)})"


@dataclass(frozen=True)
class KiteSession:
    """A day's access token for one account, as issued by ``/session/token``."""

    api_key: str
    access_token: str = field(repr=False)
    user_id: str
    issued_at: datetime
    expires_at: datetime

    def __repr__(self) -> str:
        return (
            f"KiteSession(api_key={self.api_key!r}, user_id={self.user_id!r}, "
            f"access_token={_mask(self.access_token)}, expires_at={self.expires_at.isoformat()})"
        )

    def is_expired(self, now: datetime) -> bool:
        """Whether Kite will have invalidated the token by ``now``."""
        return now >= self.expires_at


@dataclass
class _Cached:
    version_id: str
    value: Any
    fetched_at: float


class CredentialVault:
    """Read and write encrypted Kite credentials.

    Reads are cached per account for ``cache_seconds`` so a pool of connections
    does not hammer Secrets Manager; ``force_refresh=True`` bypasses the cache
    (the feed does this when Kite refuses a token), which is how a rotated
    token is picked up without a restart. Thread-safe.
    """

    def __init__(
        self,
        secrets_client: Any,
        cipher: Cipher,
        *,
        prefix: str = "ticker/kite",
        cache_seconds: float = 60.0,
        kms_key_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets = secrets_client
        self._cipher = cipher
        self._prefix = prefix.rstrip("/")
        self._cache_seconds = cache_seconds
        self._kms_key_id = kms_key_id
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    # -- names -------------------------------------------------------------------

    @classmethod
    def from_settings(
        cls, settings: VaultSettings, *, secretsmanager: Any, kms: Any
    ) -> CredentialVault:
        """The vault ``KITE_CREDENTIALS_*`` describe, on these clients."""
        return cls(
            secretsmanager,
            KmsEnvelopeCipher(kms, settings.kms_key_arn),
            prefix=settings.prefix,
            cache_seconds=settings.cache_seconds,
        )

    def _name(self, account_id: str, kind: str) -> str:
        if not ACCOUNT_ID_PATTERN.match(account_id):
            raise ValueError(f"invalid account id {account_id!r}: use letters, digits, - and _")
        return f"{self._prefix}/{account_id}/{kind}"

    # -- writes ------------------------------------------------------------------

    def put_api_credentials(self, account_id: str, credentials: ApiCredentials) -> None:
        """Store (or replace) an account's API key and secret."""
        payload = {"api_key": credentials.api_key, "api_secret": credentials.api_secret}
        self._put(account_id, "api", PURPOSE_API, payload)

    def put_session(self, account_id: str, session: KiteSession) -> None:
        """Store the account's new access token; readers see it on their next refresh."""
        payload = {
            "api_key": session.api_key,
            "access_token": session.access_token,
            "user_id": session.user_id,
            "issued_at": session.issued_at.isoformat(),
            "expires_at": session.expires_at.isoformat(),
        }
        self._put(account_id, "session", PURPOSE_SESSION, payload)

    def _put(self, account_id: str, kind: str, purpose: str, payload: dict[str, str]) -> None:
        name = self._name(account_id, kind)
        context = {"account": account_id, "purpose": purpose}
        ciphertext = self._cipher.encrypt(json.dumps(payload).encode(), context)
        value = json.dumps(
            {
                "format": FORMAT_VERSION,
                "purpose": purpose,
                "ciphertext": base64.b64encode(ciphertext).decode(),
            }
        )
        try:
            self._secrets.put_secret_value(SecretId=name, SecretString=value)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            extra = {"KmsKeyId": self._kms_key_id} if self._kms_key_id else {}
            self._secrets.create_secret(
                Name=name,
                SecretString=value,
                Tags=[
                    {"Key": "account", "Value": account_id},
                    {"Key": "purpose", "Value": purpose},
                ],
                **extra,
            )
        with self._lock:
            self._cache.pop(name, None)

    def delete_account(self, account_id: str) -> None:
        """Delete the account's API credentials and session at once (retiring it).

        Deleted without a recovery window: a retired account's secret should
        not linger, and registering the account again must not wait for one.
        A kind that is not stored is skipped, so deleting twice is harmless.
        """
        for kind in ("api", "session"):
            name = self._name(account_id, kind)
            try:
                self._secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                    raise
            with self._lock:
                self._cache.pop(name, None)

    # -- reads -------------------------------------------------------------------

    def api_credentials(self, account_id: str, *, force_refresh: bool = False) -> ApiCredentials:
        """The account's API key and secret."""
        raw = self._get(account_id, "api", PURPOSE_API, force_refresh)
        return ApiCredentials(api_key=raw["api_key"], api_secret=raw["api_secret"])

    def session(self, account_id: str, *, force_refresh: bool = False) -> KiteSession:
        """The account's current access token (possibly expired: check ``is_expired``)."""
        raw = self._get(account_id, "session", PURPOSE_SESSION, force_refresh)
        try:
            return KiteSession(
                api_key=raw["api_key"],
                access_token=raw["access_token"],
                user_id=raw["user_id"],
                issued_at=datetime.fromisoformat(raw["issued_at"]),
                expires_at=datetime.fromisoformat(raw["expires_at"]),
            )
        except (KeyError, ValueError) as exc:
            raise CredentialCorruptError(f"session for {account_id} is malformed") from exc

    def _get(self, account_id: str, kind: str, purpose: str, force_refresh: bool) -> dict[str, str]:
        name = self._name(account_id, kind)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(name)
        if cached and not force_refresh and now - cached.fetched_at < self._cache_seconds:
            return dict(cached.value)
        try:
            response = self._secrets.get_secret_value(SecretId=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                raise CredentialNotFoundError(
                    f"no {kind} credentials for account {account_id}"
                ) from exc
            raise
        version = response["VersionId"]
        if cached and cached.version_id == version:
            value = cached.value  # unchanged: skip the KMS round trip
        else:
            value = self._open(response["SecretString"], account_id, purpose)
        with self._lock:
            self._cache[name] = _Cached(version, value, now)
        return dict(value)

    def _open(self, secret_string: str, account_id: str, purpose: str) -> dict[str, str]:
        try:
            envelope = json.loads(secret_string)
            if envelope.get("format") != FORMAT_VERSION or envelope.get("purpose") != purpose:
                raise CredentialCorruptError(f"unexpected envelope for {account_id}/{purpose}")
            ciphertext = base64.b64decode(envelope["ciphertext"], validate=True)
            plaintext = self._cipher.decrypt(
                ciphertext, {"account": account_id, "purpose": purpose}
            )
            payload = json.loads(plaintext)
        except CredentialCorruptError:
            raise
        except (EnvelopeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CredentialCorruptError(f"cannot open {purpose} for account {account_id}") from exc
        if not isinstance(payload, dict):
            raise CredentialCorruptError(f"{purpose} for account {account_id} is not an object")
        return payload

    def has_api_credentials(self, account_id: str) -> bool:
        """Whether the account's API credentials are stored, from the secret's metadata alone.

        No value is read or decrypted (``DescribeSecret``): the feed asks this
        of an account missing from a listing without ever holding API secrets.
        A secret scheduled for deletion counts as gone.
        """
        try:
            described = self._secrets.describe_secret(SecretId=self._name(account_id, "api"))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return False
            raise
        return "DeletedDate" not in described

    def accounts(self) -> list[str]:
        """Accounts that have API credentials stored, sorted."""
        return sorted(self._iter_accounts())

    def _iter_accounts(self) -> Iterator[str]:
        paginator = self._secrets.get_paginator("list_secrets")
        pages = paginator.paginate(Filters=[{"Key": "name", "Values": [f"{self._prefix}/"]}])
        for page in pages:
            for secret in page["SecretList"]:
                parts = secret["Name"][len(self._prefix) + 1 :].split("/")
                if len(parts) == 2 and parts[1] == "api":
                    yield parts[0]
