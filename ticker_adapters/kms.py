"""KMS key identifiers: which forms the vault accepts (standard library only).

Apart from :mod:`ticker_adapters.envelope` so that settings models can check a
key ARN without importing the Encryption SDK: a function that only reads its
settings must not need the SDK installed.
"""

from __future__ import annotations

import re

#: ``arn:<partition>:kms:<region>:<account>:key/<key id>`` (multi-Region ``mrk-`` ids included).
KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+")


def require_key_arn(value: str) -> str:
    """``value`` if it is a KMS key ARN; ValueError otherwise (an alias, a bare key id).

    The Encryption SDK's KMS keyring decrypts only when the data key's
    recorded key ARN equals the keyring's key id: with an alias, encryption
    works (KMS resolves it) but every decrypt fails. So the vault's key is
    configured by ARN, checked when settings load, not at the first decrypt.
    """
    if KEY_ARN.fullmatch(value):
        return value
    raise ValueError(
        "must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>), not an alias or "
        "key id: the Encryption SDK decrypts only with the key ARN "
        "(aws kms describe-key --key-id alias/... --query KeyMetadata.Arn)"
    )
