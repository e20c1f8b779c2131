"""At most once per ``Idempotency-Key``: Powertools' idempotency utility on DynamoDB.

Order writes carry an ``Idempotency-Key`` header. The key is read from the
request's headers case-insensitively and passed to Powertools as data, not
picked out of the raw event by a JMESPath: a JMESPath on
``headers."Idempotency-Key"`` is case-sensitive, so a browser's or an
HTTP/2 client's lower-case header would silently turn idempotency off.

The record's key is (user, operation, account, key): two users may use the
same key, and one user's key is one intent. The record's payload hash is the
request itself, so the same key with a different request is refused (422).
While the first request runs, the record is ``INPROGRESS`` and a second
answers 409 with ``Retry-After``; once it finished, the stored answer is
replayed as it was. Answers that mean nothing happened at Kite and that a
retry may change (rate limits, Kite unreachable, login required) are raised,
not returned, so they are not stored and the key can be retried.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
from aws_lambda_powertools.utilities.idempotency.base import IdempotencyHandler
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyKeyError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from lambdas.api.errors import (
    IdempotencyKeyRequiredError,
    IdempotencyKeyReusedError,
    RequestInProgressError,
    ServiceUnavailableError,
)
from ticker_adapters.aws import create_table

KEY_ATTRIBUTE = "id"
"""The table's partition key (Powertools' DynamoDB persistence layer's default)."""
TTL_ATTRIBUTE = "expiration"
"""The TTL attribute Powertools writes (its default)."""
HEADER = "idempotency-key"
KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
KEY_PREFIX = "ticker-api"
REPLAYED = "replayed"

Answer = dict[str, Any]
"""A stored answer: ``{"status_code": int, "body": {...}}`` (plus ``replayed`` on a replay)."""


def create_idempotency_table(dynamodb: Any, name: str) -> None:
    """The idempotency records' table as Powertools expects it (tests and the sandbox; CDK
    owns it in AWS)."""
    create_table(dynamodb, name, partition_key=KEY_ATTRIBUTE, ttl_attribute=TTL_ATTRIBUTE)


def idempotency_key(headers: Mapping[str, str] | None) -> str:
    """The request's ``Idempotency-Key``, whatever its case; 400 when missing or malformed."""
    for name, value in (headers or {}).items():
        if name.lower() == HEADER:
            key = (value or "").strip()
            if KEY_PATTERN.match(key):
                return key
            break
    raise IdempotencyKeyRequiredError()


def _mark_replayed(response: Any, idempotent_data: DataRecord) -> Any:
    if isinstance(response, dict):
        return {**response, REPLAYED: True}
    return response


class IdempotentWrites:
    """Runs a write once per (user, operation, account, key) and replays its answer."""

    def __init__(
        self,
        persistence: BasePersistenceLayer,
        *,
        expires_after_seconds: int = 24 * 3600,
        retry_after_seconds: int = 1,
    ) -> None:
        self._persistence = persistence
        self._retry_after = retry_after_seconds
        self.config = IdempotencyConfig(
            event_key_jmespath="[user_id, operation, account_id, key]",
            payload_validation_jmespath="request",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=expires_after_seconds,
            response_hook=_mark_replayed,
        )

    def register_context(self, context: Any) -> None:
        """Tie in-progress records to this invocation's deadline (a crash frees the key then)."""
        if context is not None and hasattr(context, "get_remaining_time_in_millis"):
            self.config.register_lambda_context(context)

    def run(
        self,
        *,
        user_id: str,
        operation: str,
        account_id: str,
        key: str,
        request: Mapping[str, Any],
        execute: Callable[[], Answer],
    ) -> Answer:
        """``execute()``'s answer the first time; the same answer for every replay."""
        payload = {
            "user_id": user_id,
            "operation": operation,
            "account_id": account_id,
            "key": key,
            "request": dict(request),
        }

        completed: list[Answer] = []

        def write(data: dict[str, Any]) -> Answer:
            answer = execute()
            completed.append(answer)
            return answer

        handler = IdempotencyHandler(
            function=write,
            function_payload=payload,
            config=self.config,
            persistence_store=self._persistence,
            key_prefix=KEY_PREFIX,
            function_args=(),
            function_kwargs={"data": payload},
        )
        try:
            answer: Answer = handler.handle()
        except IdempotencyValidationError as exc:
            raise IdempotencyKeyReusedError() from exc
        except (IdempotencyAlreadyInProgressError, IdempotencyItemAlreadyExistsError) as exc:
            raise RequestInProgressError(headers={"Retry-After": str(self._retry_after)}) from exc
        except IdempotencyKeyError as exc:
            raise IdempotencyKeyRequiredError() from exc
        except IdempotencyPersistenceLayerError as exc:
            if completed:
                # The write happened but its answer could not be stored: answer it anyway.
                # A retry is still safe: the intent store knows the outcome (see logic).
                return completed[0]
            raise ServiceUnavailableError() from exc
        return answer
