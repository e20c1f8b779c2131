"""What every router needs: the dependencies, and per-request helpers on the current event.

Routers are built by functions taking a :class:`Dependencies` (no module
state): the handler builds one set per execution environment, tests build
theirs with fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, cast

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from lambdas.api.auth import GrantReader, Principal, principal_from_claims, require_role
from lambdas.api.errors import ApiError
from lambdas.api.idempotency import REPLAYED, Answer, IdempotentWrites, idempotency_key
from lambdas.api.logic import Trading
from lambdas.api.models import Envelope, ErrorBody, Grant
from lambdas.api.updates import OrderUpdate

COGNITO = "cognito"
AUTHENTICATED: list[dict[str, list[str]]] = [{COGNITO: []}]
REPLAY_HEADER = "Idempotent-Replayed"


class GrantStore(GrantReader, Protocol):
    """The grants table (``lambdas.api.dal.grants``)."""

    def put(self, user_id: str, account_id: str, role: str, granted_by: str) -> Grant:
        """Grant a role."""
        ...

    def delete(self, user_id: str, account_id: str) -> bool:
        """Withdraw a grant."""
        ...

    def for_user(self, user_id: str) -> list[Grant]:
        """A user's grants."""
        ...

    def all(self) -> list[Grant]:
        """Every grant."""
        ...


class UpdateSink(Protocol):
    """Where verified order updates go (the lifecycle store, then the bus)."""

    def ingest(self, updates: list[OrderUpdate], source: str) -> list[bool]:
        """Store each update once and publish the new ones; per update, whether it was new."""
        ...


@dataclass
class Dependencies:
    """Everything the routes use, built once per execution environment."""

    trading: Trading
    grants: GrantStore
    writes: IdempotentWrites
    updates: UpdateSink
    api_secret: Callable[[str], str | None]
    """An account's Kite API secret (postback checksums), None when unknown."""
    extra: dict[str, Any] = field(default_factory=dict)


def ok(data: Any) -> Envelope[Any]:
    """Kite's success envelope around ``data``.

    A plain dict at run time: the route's return annotation (``Envelope[X]``)
    is what Powertools validates and serializes it against.
    """
    return cast(Envelope[Any], {"status": "success", "data": data})


def new_router() -> APIGatewayRouter:
    """A router (Powertools' constructor is untyped)."""
    return APIGatewayRouter()  # type: ignore[no-untyped-call]


def error_response(error: ApiError) -> Response[Any]:
    """The answer to an :class:`ApiError`."""
    status = error.answer["status_code"] if isinstance(error, StoredAnswerError) else error.status
    return Response(
        status_code=int(status),
        content_type=content_types.APPLICATION_JSON,
        body=error.body(),
        headers=error.headers,
    )


class StoredAnswerError(ApiError):
    """A write's error answer as stored (a refusal): rendered by the error handler as it was."""

    def __init__(self, answer: Answer, headers: Mapping[str, str]) -> None:
        super().__init__(str(answer["body"].get("message", "")), headers=headers)
        self.answer = answer

    def body(self) -> dict[str, Any]:
        """The stored body."""
        return dict(self.answer["body"])


def answer_response(answer: Answer) -> Response[Any]:
    """The answer to a write (first time or replayed)."""
    headers = {REPLAY_HEADER: "true"} if answer.get(REPLAYED) else {}
    if int(answer["status_code"]) >= 400:
        raise StoredAnswerError(answer, headers)
    return Response(
        status_code=int(answer["status_code"]),
        content_type=content_types.APPLICATION_JSON,
        body=answer["body"],
        headers=headers,
    )


def principal(router: APIGatewayRouter) -> Principal:
    """The verified caller of the current request."""
    claims = router.current_event.request_context.authorizer.claims
    return principal_from_claims(claims)


def allowed(
    router: APIGatewayRouter, deps: Dependencies, account_id: str, needed: str
) -> Principal:
    """The caller, if their grant on ``account_id`` allows ``needed`` (else 403)."""
    caller = principal(router)
    require_role(caller, account_id, "trade" if needed == "trade" else "view", deps.grants)
    return caller


def request_key(router: APIGatewayRouter) -> str:
    """The request's Idempotency-Key (any case)."""
    headers: Mapping[str, str] = router.current_event.headers or {}
    return idempotency_key(headers)


def idempotent_write(
    router: APIGatewayRouter,
    deps: Dependencies,
    account_id: str,
    operation: str,
    request: Mapping[str, Any],
    execute: Callable[[Principal, str], Answer],
) -> Response[Any]:
    """A write: the caller must trade the account and send a key; run once per key."""
    caller = allowed(router, deps, account_id, "trade")
    key = request_key(router)
    answer = deps.writes.run(
        user_id=caller.user_id,
        operation=operation,
        account_id=account_id,
        key=key,
        request=request,
        execute=lambda: execute(caller, key),
    )
    return answer_response(answer)


ERROR_MEANINGS = {
    400: "Kite refused the request (kite_rejected)",
    401: "Not authenticated",
    403: "No access to this account",
    404: "Kite does not know the order or trigger (kite_not_found), or no such grant",
    409: "A request with this Idempotency-Key is in progress (see Retry-After)",
    413: "Request body too large",
    415: "Request body not application/json",
    422: "Invalid request: details name each field and rule",
    424: "The account's Kite session is missing or expired (kite_login_required)",
    429: "Order rate limit (see Retry-After)",
    502: "Kite answered something unexpected",
    503: "Kite or a store is unavailable; nothing was sent",
    500: "Unexpected error (internal_error; no details are given)",
    504: "Kite did not confirm the order and it is not in the order book",
}
# Any request: its body's size and type, validation, the unexpected, Kite's answer not as documented
ALWAYS = (413, 415, 422, 500, 502)
READ_ERRORS = (400, 401, 403, 404, 422, 424, 429, 502, 503)
WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 422, 424, 429, 502, 503, 504)


def documented(success_description: str, errors: tuple[int, ...] = READ_ERRORS) -> dict[int, Any]:
    """OpenAPI responses: the success (from the return type) and each error's body."""
    responses: dict[int, Any] = {200: {"description": success_description}}
    for status in sorted({*errors, *ALWAYS}):
        responses[status] = {
            "description": ERROR_MEANINGS.get(status, HTTPStatus(status).phrase),
            "content": {"application/json": {"model": ErrorBody}},
        }
    return responses
