"""Posting to clients through API Gateway's ``@connections`` management API.

Each post's outcome is classified by the error's type, never its text:
``GoneException`` (HTTP 410: the connection is gone; boto3 raises it only
when the answer carries ``x-amzn-ErrorType: GoneException``), throttling
(``LimitExceededException`` and kin: the client or the API is over its
rate), and anything else (a network error, a 5xx) as a failure. The SDK's own
retries are off: the fan-out decides what to retry, and what it cannot
deliver now it conflates into the next batch instead.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ticker_adapters.aws import error_code

THROTTLED_CODES = frozenset(
    {"LimitExceededException", "TooManyRequestsException", "ThrottlingException"}
)


class PostOutcome(StrEnum):
    """What became of one post."""

    DELIVERED = "delivered"
    GONE = "gone"
    THROTTLED = "throttled"
    TOO_LARGE = "too_large"
    FORBIDDEN = "forbidden"
    FAILED = "failed"


def management_client(endpoint: str, *, max_connections: int = 32) -> Any:
    """An ``apigatewaymanagementapi`` client for the API's stage endpoint (SDK retries off)."""
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=2,
        read_timeout=5,
        max_pool_connections=max_connections,
    )
    return boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, config=config)


class ConnectionPoster:
    """``PostToConnection`` with typed outcomes (thread-safe: boto3 clients are)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def post(self, connection_id: str, data: bytes) -> PostOutcome:
        """Send ``data`` to one connection."""
        try:
            self._client.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            code = error_code(exc)
            if code == "GoneException":
                return PostOutcome.GONE
            if code in THROTTLED_CODES:
                return PostOutcome.THROTTLED
            if code == "PayloadTooLargeException":
                return PostOutcome.TOO_LARGE
            if code == "ForbiddenException":
                return PostOutcome.FORBIDDEN
            return PostOutcome.FAILED
        except BotoCoreError:
            return PostOutcome.FAILED
        return PostOutcome.DELIVERED
