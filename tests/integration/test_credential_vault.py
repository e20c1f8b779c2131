"""The credential vault against Secrets Manager and KMS on moto's server."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime

import aws_encryption_sdk
import boto3
import pytest
from aws_cryptographic_material_providers.mpl import AwsCryptographicMaterialProviders
from aws_cryptographic_material_providers.mpl.config import MaterialProvidersConfig
from aws_cryptographic_material_providers.mpl.models import (
    CreateAwsKmsKeyringInput,
    CreateMultiKeyringInput,
)
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from sandbox.moto_server import AwsEndpoint
from ticker_adapters.credentials import (
    ApiCredentials,
    CredentialCorruptError,
    CredentialNotFoundError,
    CredentialVault,
    KiteSession,
)
from ticker_adapters.envelope import SERVICE_CONTEXT, KmsEnvelopeCipher
from ticker_core.kite import next_token_expiry

pytestmark = pytest.mark.integration


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_session(api_key: str) -> KiteSession:
    issued = datetime.now(UTC)
    return KiteSession(api_key, secrets.token_hex(16), "AB1234", issued, next_token_expiry(issued))


def overwrite(sm: object, name: str, value: str) -> None:
    """Replace a secret's value behind the vault's back, as an attacker or a bug would."""
    sm.put_secret_value(SecretId=name, SecretString=value)  # type: ignore[attr-defined]  # pragma: allowlist secret


@pytest.fixture
def kms_key(aws: AwsEndpoint) -> str:
    kms = boto3.client("kms", **aws.client_kwargs())
    return str(kms.create_key(Description="ticker-service credentials")["KeyMetadata"]["Arn"])


def make_vault(aws: AwsEndpoint, key_arn: str, clock: FakeClock | None = None) -> CredentialVault:
    kms = boto3.client("kms", **aws.client_kwargs())
    sm = boto3.client("secretsmanager", **aws.client_kwargs())
    return CredentialVault(
        sm, KmsEnvelopeCipher(kms, key_arn), cache_seconds=60, clock=clock or FakeClock()
    )


def test_credentials_round_trip_and_are_stored_encrypted(aws: AwsEndpoint, kms_key: str) -> None:
    # Given a vault and an account's API credentials and session
    vault = make_vault(aws, kms_key)
    creds = ApiCredentials("kitekey1", secrets.token_hex(16))
    session = new_session("kitekey1")
    # When both are stored
    vault.put_api_credentials("acct-1", creds)
    vault.put_session("acct-1", session)
    # Then a fresh vault reads them back
    reader = make_vault(aws, kms_key)
    assert reader.api_credentials("acct-1") == creds
    assert reader.session("acct-1") == session
    # And what Secrets Manager holds reveals neither secret
    sm = boto3.client("secretsmanager", **aws.client_kwargs())
    for kind in ("api", "session"):
        raw = sm.get_secret_value(SecretId=f"ticker/kite/acct-1/{kind}")["SecretString"]
        assert creds.api_secret not in raw
        assert session.access_token not in raw
        assert json.loads(raw)["format"] == 1
    assert reader.accounts() == ["acct-1"]


def test_ciphertext_moved_to_another_account_does_not_open(aws: AwsEndpoint, kms_key: str) -> None:
    # Given two accounts' sessions
    vault = make_vault(aws, kms_key)
    vault.put_session("acct-1", new_session("k1"))
    vault.put_session("acct-2", new_session("k2"))
    # When someone copies account 1's encrypted value over account 2's secret
    sm = boto3.client("secretsmanager", **aws.client_kwargs())
    stolen = sm.get_secret_value(SecretId="ticker/kite/acct-1/session")["SecretString"]
    overwrite(sm, "ticker/kite/acct-2/session", stolen)
    # Then account 2's session fails to open: the encryption context names account 1
    with pytest.raises(CredentialCorruptError, match="acct-2"):
        make_vault(aws, kms_key).session("acct-2")


@pytest.mark.parametrize(
    "tampered",
    [
        "not json",
        json.dumps({"format": 2, "purpose": "kite-session", "ciphertext": ""}),
        json.dumps({"format": 1, "purpose": "kite-session", "ciphertext": "%%%"}),
        json.dumps({"format": 1, "purpose": "kite-session", "ciphertext": "AAAA"}),
    ],
)
def test_tampered_values_are_a_typed_error(aws: AwsEndpoint, kms_key: str, tampered: str) -> None:
    # Given a stored session that someone overwrote with garbage
    vault = make_vault(aws, kms_key)
    vault.put_session("acct-1", new_session("k1"))
    sm = boto3.client("secretsmanager", **aws.client_kwargs())
    overwrite(sm, "ticker/kite/acct-1/session", tampered)
    # When it is read, Then the error is typed and names the account
    with pytest.raises(CredentialCorruptError, match="acct-1"):
        make_vault(aws, kms_key).session("acct-1")


def test_rotation_is_seen_after_the_cache_ages_or_on_forced_refresh(
    aws: AwsEndpoint, kms_key: str
) -> None:
    # Given a reader that has cached the morning's token
    clock = FakeClock()
    writer, reader = make_vault(aws, kms_key), make_vault(aws, kms_key, clock)
    first, second = new_session("k1"), new_session("k1")
    writer.put_session("acct-1", first)
    assert reader.session("acct-1") == first
    # When the token is rotated by another process
    writer.put_session("acct-1", second)
    # Then the reader keeps serving its cache within the TTL (no call per connection)
    assert reader.session("acct-1") == first
    # And sees the new token when forced (as the feed does on a 403)
    assert reader.session("acct-1", force_refresh=True) == second
    # And after the TTL, even unforced
    writer.put_session("acct-1", first)
    clock.now += 61
    assert reader.session("acct-1") == first


def test_missing_and_invalid_accounts_are_clear_errors(aws: AwsEndpoint, kms_key: str) -> None:
    vault = make_vault(aws, kms_key)
    with pytest.raises(CredentialNotFoundError, match="acct-9"):
        vault.session("acct-9")
    with pytest.raises(ValueError, match="invalid account id"):
        vault.session("../other")


def stored_ciphertext(sm: object, name: str) -> bytes:
    envelope = json.loads(sm.get_secret_value(SecretId=name)["SecretString"])  # type: ignore[attr-defined]
    return base64.b64decode(envelope["ciphertext"])


def with_ciphertext(ciphertext: bytes) -> str:
    return json.dumps(
        {
            "format": 1,
            "purpose": "kite-session",
            "ciphertext": base64.b64encode(ciphertext).decode(),
        }
    )


def test_a_flipped_byte_anywhere_in_the_message_is_a_typed_error(
    aws: AwsEndpoint, kms_key: str
) -> None:
    # Given a stored session whose encrypted message is intact
    vault = make_vault(aws, kms_key)
    vault.put_session("acct-1", new_session("k1"))
    sm = boto3.client("secretsmanager", **aws.client_kwargs())
    name = "ticker/kite/acct-1/session"
    message = stored_ciphertext(sm, name)
    # When one byte of it is flipped, at every fourth position: header, encrypted data
    # key, body (AES-GCM tag) and the signature footer alike
    for position in range(0, len(message), 4):
        tampered = bytearray(message)
        tampered[position] ^= 0x01
        overwrite(sm, name, with_ciphertext(bytes(tampered)))
        # Then reading it is CredentialCorruptError naming the account, never the
        # library's own InvalidTag / InvalidSignature / UnicodeDecodeError
        with pytest.raises(CredentialCorruptError, match="acct-1"):
            make_vault(aws, kms_key).session("acct-1")


def test_a_message_carrying_a_second_data_key_is_refused(aws: AwsEndpoint, kms_key: str) -> None:
    # Given a session encrypted for the right context, but under two KMS keys (two
    # encrypted data keys): not a message this service writes
    kms = boto3.client("kms", **aws.client_kwargs())
    other_key = str(kms.create_key(Description="someone else's")["KeyMetadata"]["Arn"])
    providers = AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())
    keyrings = [
        providers.create_aws_kms_keyring(
            input=CreateAwsKmsKeyringInput(kms_key_id=key, kms_client=kms)
        )
        for key in (kms_key, other_key)
    ]
    both = providers.create_multi_keyring(
        input=CreateMultiKeyringInput(generator=keyrings[0], child_keyrings=[keyrings[1]])
    )
    payload = {
        "api_key": "k1",  # pragma: allowlist secret  (an API key is public, this one fake)
        "access_token": secrets.token_hex(16),
        "user_id": "AB1234",
        "issued_at": "2026-11-27T03:00:00+00:00",
        "expires_at": "2026-11-28T00:30:00+00:00",
    }
    message, _ = aws_encryption_sdk.EncryptionSDKClient().encrypt(
        source=json.dumps(payload).encode(),
        keyring=both,
        encryption_context={**SERVICE_CONTEXT, "account": "acct-1", "purpose": "kite-session"},
    )
    vault = make_vault(aws, kms_key)
    vault.put_session("acct-1", new_session("k1"))
    sm = boto3.client("secretsmanager", **aws.client_kwargs())
    overwrite(sm, "ticker/kite/acct-1/session", with_ciphertext(bytes(message)))
    # When it is read, Then it is refused as corrupt (the SDK's limit of one data key)
    with pytest.raises(CredentialCorruptError, match="acct-1"):
        make_vault(aws, kms_key).session("acct-1")


def test_kms_out_of_reach_is_not_reported_as_tampering(aws: AwsEndpoint, kms_key: str) -> None:
    # Given a stored session, and a reader whose KMS endpoint refuses connections
    make_vault(aws, kms_key).put_session("acct-1", new_session("k1"))
    unreachable = boto3.client(
        "kms",
        **{**aws.client_kwargs(), "endpoint_url": "http://127.0.0.1:9"},
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    sm = boto3.client("secretsmanager", **aws.client_kwargs())
    reader = CredentialVault(sm, KmsEnvelopeCipher(unreachable, kms_key), clock=FakeClock())
    # When it is read, Then the connection error propagates (worth retrying), not
    # CredentialCorruptError (which would condemn a good secret)
    with pytest.raises(EndpointConnectionError):
        reader.session("acct-1")


def test_deleting_an_account_removes_both_secrets_at_once_and_it_can_come_back(
    aws: AwsEndpoint, kms_key: str
) -> None:
    # Given an account with API credentials and a session (its reads cached)
    vault = make_vault(aws, kms_key)
    vault.put_api_credentials("acct-1", ApiCredentials("kitekey1", secrets.token_hex(16)))
    vault.put_session("acct-1", new_session("kitekey1"))
    vault.api_credentials("acct-1")
    assert vault.has_api_credentials("acct-1")
    # When it is deleted (retired)
    vault.delete_account("acct-1")
    assert not vault.has_api_credentials("acct-1")
    # Then neither is readable, even through the cache, and the listing drops it at once
    with pytest.raises(CredentialNotFoundError):
        vault.api_credentials("acct-1")
    with pytest.raises(CredentialNotFoundError):
        make_vault(aws, kms_key).session("acct-1")
    assert vault.accounts() == []
    # And deleting again is harmless, and the account can be registered again at once
    vault.delete_account("acct-1")
    creds = ApiCredentials("kitekey2", secrets.token_hex(16))
    vault.put_api_credentials("acct-1", creds)
    assert make_vault(aws, kms_key).api_credentials("acct-1") == creds
