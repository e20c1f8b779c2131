"""Envelope encryption with the AWS Encryption SDK and a KMS keyring.

Every credential the service stores is encrypted client-side before it reaches
Secrets Manager, under an encryption context naming the account and purpose.
Reading a secret is then not enough to use it: the reader also needs
``kms:Decrypt`` on the key *for that context*, and a ciphertext moved to
another account's secret fails to decrypt. Shared by the feed container and
the Lambdas, so it imports only the AWS SDKs.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

SERVICE_CONTEXT = {"service": "ticker-service"}
# Every message this service writes carries one encrypted data key (one KMS key). A
# message with more was not written here, and each extra key would cost a KMS call.
MAX_ENCRYPTED_DATA_KEYS = 1


class EnvelopeError(Exception):
    """A ciphertext could not be decrypted: tampered, wrong key, or wrong context."""


class Cipher(Protocol):
    """What the vault needs from envelope encryption."""

    def encrypt(self, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        """Encrypt ``plaintext`` bound to ``context``."""
        ...

    def decrypt(self, ciphertext: bytes, context: Mapping[str, str]) -> bytes:
        """Decrypt, failing unless the ciphertext was bound to ``context``."""
        ...


class KmsEnvelopeCipher:
    """AWS Encryption SDK messages under one KMS key (key commitment required).

    The SDK and its keyring are loaded on the first encryption or decryption,
    not when the cipher is built: importing them takes a few hundred
    milliseconds, which a Lambda environment that never opens the vault (or
    has not yet) should not pay at its start.
    """

    def __init__(self, kms_client: Any, key_arn: str) -> None:
        self._kms = kms_client
        self._key_arn = key_arn
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def _sdk_and_keyring(self) -> tuple[Any, Any]:
        with self._lock:
            if self._loaded is None:
                import aws_encryption_sdk
                from aws_cryptographic_material_providers.mpl import (
                    AwsCryptographicMaterialProviders,
                )
                from aws_cryptographic_material_providers.mpl.config import (
                    MaterialProvidersConfig,
                )
                from aws_cryptographic_material_providers.mpl.models import (
                    CreateAwsKmsKeyringInput,
                )

                providers = AwsCryptographicMaterialProviders(config=MaterialProvidersConfig())
                keyring = providers.create_aws_kms_keyring(
                    input=CreateAwsKmsKeyringInput(kms_key_id=self._key_arn, kms_client=self._kms)
                )
                sdk = aws_encryption_sdk.EncryptionSDKClient(
                    commitment_policy=aws_encryption_sdk.CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
                    max_encrypted_data_keys=MAX_ENCRYPTED_DATA_KEYS,
                )
                self._loaded = (sdk, keyring)
            return self._loaded

    def encrypt(self, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        """An ESDK message holding ``plaintext``, bound to ``context`` plus the service name."""
        sdk, keyring = self._sdk_and_keyring()
        ciphertext, _header = sdk.encrypt(
            source=plaintext,
            keyring=keyring,
            encryption_context={**SERVICE_CONTEXT, **context},
        )
        return bytes(ciphertext)

    def decrypt(self, ciphertext: bytes, context: Mapping[str, str]) -> bytes:
        """The plaintext, if and only if ``ciphertext`` was encrypted for ``context``.

        Any failure to open the message is :class:`EnvelopeError`, whatever the
        library raised for it: a flipped byte surfaces as the SDK's own errors,
        as ``cryptography``'s InvalidTag or InvalidSignature, or as a
        UnicodeDecodeError from a mangled encryption context. Only botocore's
        errors propagate as they are: KMS being unreachable or refusing the
        call is not evidence of tampering, and the caller may retry it.
        """
        sdk, keyring = self._sdk_and_keyring()
        try:
            plaintext, _header = sdk.decrypt(
                source=ciphertext,
                keyring=keyring,
                encryption_context={**SERVICE_CONTEXT, **context},
            )
        except (BotoCoreError, ClientError):
            raise
        except Exception as exc:  # every other failure means the message cannot be trusted
            raise EnvelopeError(f"cannot decrypt for context {dict(context)}") from exc
        return bytes(plaintext)
