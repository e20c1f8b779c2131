"""The API's errors: one type per documented code, each with its HTTP status.

Every error answer is ``{"status": "error", "code": ..., "message": ...}``
(plus ``details`` for validation errors and ``kite_error_type`` when Kite
refused): a stable code to branch on, and a message for people that never
carries a secret, a token, a stack trace or internal error text. Routes
raise these; the resolver's one exception handler turns them into answers.
The table in ``ERROR_CODES`` is the documentation (README, openapi.json).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldProblem:
    """One reason a request is invalid: the field (dotted path) and the rule it broke."""

    field: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """JSON-ready."""
        return {"field": self.field, "rule": self.rule, "message": self.message}


class ApiError(Exception):
    """Base of every error the API answers deliberately."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "The request could not be completed."

    def __init__(
        self,
        message: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        return {"status": "error", "code": self.code, "message": self.message, **self.extra}


class UnauthorizedError(ApiError):
    """No verified identity reached the function (the authorizer should have refused)."""

    code = "unauthorized"
    status = 401
    default_message = "Authentication is required."


class ForbiddenError(ApiError):
    """The caller may not do this (same answer whether or not the account exists)."""

    code = "forbidden"
    status = 403
    default_message = "You do not have access to this account."


class NotFoundError(ApiError):
    """No such route, order or trigger (for an account the caller may see)."""

    code = "not_found"
    status = 404
    default_message = "Not found."


class PayloadTooLargeError(ApiError):
    """The request body is over the configured cap."""

    code = "payload_too_large"
    status = 413
    default_message = "The request body is too large."


class UnsupportedMediaTypeError(ApiError):
    """A request body that is not JSON."""

    code = "unsupported_media_type"
    status = 415
    default_message = "Send the request body as application/json."


class ValidationFailedError(ApiError):
    """The request breaks one or more rules; ``details`` names each field and rule."""

    code = "validation_error"
    status = 422
    default_message = "The request is invalid."

    def __init__(self, problems: Sequence[FieldProblem], message: str | None = None) -> None:
        super().__init__(
            message or "; ".join(f"{p.field}: {p.message}" for p in problems) or None,
            extra={"details": [p.as_dict() for p in problems]},
        )
        self.problems = tuple(problems)


class IdempotencyKeyRequiredError(ApiError):
    """A write without an ``Idempotency-Key`` header (or with a malformed one)."""

    code = "idempotency_key_required"
    status = 400
    default_message = (
        "This request changes orders: send an Idempotency-Key header "
        "(1-128 of A-Z a-z 0-9 . _ : -), unique per intended action."
    )


class IdempotencyKeyReusedError(ApiError):
    """The key was used before with a different request."""

    code = "idempotency_key_reused"
    status = 422
    default_message = (
        "This Idempotency-Key was already used with a different request; use a new key."
    )


class RequestInProgressError(ApiError):
    """The first request with this key is still being processed."""

    code = "request_in_progress"
    status = 409
    default_message = "A request with this Idempotency-Key is still in progress; retry later."


class OrderRateLimitedError(ApiError):
    """The account's order rate (Kite's 10 orders/s) stayed full for the whole wait."""

    code = "rate_limited"
    status = 429
    default_message = "Too many orders for this account right now; retry after a moment."


class KiteLoginRequiredError(ApiError):
    """The account has no live Kite session (never logged in today, expired or revoked)."""

    code = "kite_login_required"
    status = (
        424  # Failed Dependency: not the caller's credentials (401) but the account's Kite login
    )
    default_message = "The account's Kite session has expired or is missing: log in to Kite again."


class KiteRejectedError(ApiError):
    """Kite refused the request (its ``error_type`` is passed on, its message too)."""

    code = "kite_rejected"
    status = 400
    default_message = "Kite refused the request."


class KiteNotFoundError(ApiError):
    """Kite does not know the order or trigger."""

    code = "kite_not_found"
    status = 404
    default_message = "Kite does not know this order or trigger."


class KiteUnavailableError(ApiError):
    """Kite could not be reached or failed, and nothing was changed there."""

    code = "kite_unavailable"
    status = 503
    default_message = "Kite is unavailable; nothing was sent. Retry later."


class KiteRateLimitedError(ApiError):
    """Kite itself answered 429."""

    code = "kite_rate_limited"
    status = 429
    default_message = "Kite is throttling this account; retry after a moment."


class OrderOutcomeUnknownError(ApiError):
    """Kite may have accepted the order but did not say, and the order book does not show it."""

    code = "order_outcome_unknown"
    status = 504
    default_message = (
        "Kite did not confirm the order and it is not in the order book yet. It will not be "
        "sent again under this Idempotency-Key; check the order book before placing it anew."
    )


class KiteBadResponseError(ApiError):
    """Kite answered something that is not what it documents."""

    code = "kite_bad_response"
    status = 502
    default_message = "Kite answered something unexpected."


class ServiceUnavailableError(ApiError):
    """A store this API depends on (DynamoDB, PostgreSQL, the instruments) is unavailable."""

    code = "service_unavailable"
    status = 503
    default_message = "The service is temporarily unavailable; nothing was sent to Kite."


class PostbackRefusedError(ApiError):
    """A postback whose checksum does not verify (or that is not a postback at all)."""

    code = "postback_refused"
    status = 403
    default_message = "Postback refused."


class KiteFailureKind(StrEnum):
    """How a Kite call failed, as the broker classifies it (never from message text)."""

    NOT_SENT = "not_sent"
    """The request never left (connection refused, DNS, pool): nothing happened at Kite."""
    OUTCOME_UNKNOWN = "outcome_unknown"
    """Sent, and no usable answer came back (timeout, reset, 5xx): Kite may have acted."""
    LOGIN_REQUIRED = "login_required"
    """``TokenException``, or no session in the vault."""
    REFUSED = "refused"
    """Kite answered with an error envelope meaning it did not act (input, order, margin...)."""
    NOT_FOUND = "not_found"
    """Kite does not know the order or trigger."""
    RATE_LIMITED = "rate_limited"
    """Kite answered 429: it did not act."""
    BAD_RESPONSE = "bad_response"
    """Kite answered 2xx with something that is not its documented shape."""


class KiteCallError(Exception):
    """A Kite call failed; ``kind`` says how (the broker's classification)."""

    def __init__(
        self,
        kind: KiteFailureKind,
        message: str,
        *,
        error_type: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.error_type = error_type
        self.http_status = http_status


ERRORS: tuple[type[ApiError], ...] = (
    UnauthorizedError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
    IdempotencyKeyRequiredError,
    IdempotencyKeyReusedError,
    RequestInProgressError,
    OrderRateLimitedError,
    KiteLoginRequiredError,
    KiteRejectedError,
    KiteNotFoundError,
    KiteUnavailableError,
    KiteRateLimitedError,
    OrderOutcomeUnknownError,
    KiteBadResponseError,
    ServiceUnavailableError,
    PostbackRefusedError,
    ApiError,
)
ERROR_CODES: dict[str, tuple[int, str]] = {e.code: (e.status, e.default_message) for e in ERRORS}
"""Every code the API answers with: its HTTP status and what it means."""
