"""The resolver: routers, validation, errors, CORS and the body cap, in one place.

:func:`build_app` assembles Powertools' REST resolver from the routers
(request and response models validated; OpenAPI generated from the same
code). :class:`ApiApp` wraps it with what applies to every request:

- the body cap (413 before anything is parsed);
- CORS from an allow-list: a listed origin gets CORS headers (preflights
  answered 204), any other origin gets none at all;
- every error answered as ``{"status": "error", "code", "message"}``: an
  unexpected exception is logged by type only (no message, no stack trace:
  either may hold a token or a secret) and answered 500 ``internal_error``.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aws_lambda_powertools.event_handler import (
    APIGatewayRestResolver,
    CORSConfig,
    Response,
    content_types,
)
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestValidationError,
    ResponseValidationError,
)
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from lambdas.api.context import COGNITO, Dependencies, error_response
from lambdas.api.errors import (
    ApiError,
    FieldProblem,
    KiteBadResponseError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
)
from lambdas.api.routers import accounts, admin, gtt, orders, portfolio, public, subscriptions
from lambdas.common.observability import Observability

TITLE = "ticker-service API"
VERSION = "1.0.0"
DESCRIPTION = (
    "Orders, portfolio, margins and GTT on Zerodha Kite Connect, per account, "
    "authenticated (Cognito) and owned (grants), every order placed at most once "
    "(Idempotency-Key); accounts and their daily Kite login; what the feed streams; "
    "market data (instruments, quotes, option chains with Greeks, candles). Parameters "
    "are named as Kite names them."
)


class RouterModule(Protocol):
    """A module of ``lambdas.api.routers``: ``build(deps)`` makes its router."""

    def build(self, deps: Dependencies) -> APIGatewayRouter:
        """The area's router."""
        ...


TRADING_ROUTERS: tuple[RouterModule, ...] = (
    orders,
    portfolio,
    gtt,
    admin,
    accounts,
    subscriptions,
    public,
)
"""What the trading API function serves (no option math: it imports no scipy)."""
CORS_REQUEST_HEADERS = ["Idempotency-Key"]
CORS_EXPOSED_HEADERS = ["Retry-After", "Idempotent-Replayed"]
CORS_MAX_AGE_SECONDS = 600


def _problems(exc: RequestValidationError) -> list[FieldProblem]:
    problems = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        if location and location[0] in ("body", "query", "path", "header"):
            location = location[1:] if location[0] == "body" else location
        problems.append(
            FieldProblem(
                ".".join(location) or "body",
                str(error.get("type", "invalid")),
                str(error.get("msg", "invalid value")),
            )
        )
    return problems


def build_app(
    deps: Dependencies,
    cors_origins: Sequence[str] = (),
    routers: Sequence[RouterModule] = TRADING_ROUTERS,
) -> APIGatewayRestResolver:
    """The resolver with ``routers``; errors answered in the API's shape."""
    cors = None
    if cors_origins:
        cors = CORSConfig(
            allow_origin=cors_origins[0],
            extra_origins=list(cors_origins[1:]),
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=CORS_MAX_AGE_SECONDS,
        )
    app = APIGatewayRestResolver(
        cors=cors,
        enable_validation=True,
        response_validation_error_http_code=KiteBadResponseError.status,
    )
    for module in routers:
        app.include_router(module.build(deps))

    @app.exception_handler(ApiError)  # type: ignore[untyped-decorator]
    def api_error(exc: ApiError) -> Response[Any]:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
    def invalid_request(exc: RequestValidationError) -> Response[Any]:
        return error_response(ValidationFailedError(_problems(exc)))

    @app.exception_handler(ResponseValidationError)  # type: ignore[untyped-decorator]
    def invalid_answer(exc: ResponseValidationError) -> Response[Any]:
        # Kite's answer does not fit its documented shape (a field of another type).
        return error_response(KiteBadResponseError())

    @app.not_found
    def not_found(exc: RouteNotFoundError) -> Response[Any]:
        return error_response(NotFoundError("No such route."))

    return app


def openapi_json(app: APIGatewayRestResolver) -> str:
    """The OpenAPI 3.1 document of ``app`` (what ``openapi.json`` holds)."""
    # Only the document's generation needs Powertools' OpenAPI models (tens of ms to import).
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, Server

    return app.get_openapi_json_schema(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        servers=[Server(url="/")],
        security_schemes={
            COGNITO: APIKey.model_validate(
                {
                    "type": "apiKey",
                    "in": APIKeyIn.header,
                    "name": "Authorization",
                    "description": "A Cognito user pool ID token (API Gateway's Cognito "
                    "authorizer verifies it)",
                }
            )
        },
    )


def body_size(event: Mapping[str, Any]) -> int:
    """The request body's size in bytes (decoded when base64)."""
    body = event.get("body")
    if not body:
        return 0
    if event.get("isBase64Encoded"):
        try:
            return len(base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError):
            return len(body)
    return len(body.encode()) if isinstance(body, str) else len(body)


def _header(event: Mapping[str, Any], wanted: str) -> str | None:
    for name, value in (event.get("headers") or {}).items():
        if name.lower() == wanted:
            return str(value)
    return None


def _utf8_body(event: Mapping[str, Any]) -> bool:
    """Whether the body is text (JSON must be UTF-8)."""
    body = event.get("body") or ""
    try:
        raw = base64.b64decode(body, validate=True) if event.get("isBase64Encoded") else None
        if raw is not None:
            raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return True


def _origin(event: Mapping[str, Any]) -> str | None:
    return _header(event, "origin")


def _json_body(event: Mapping[str, Any]) -> bool:
    """Whether the body is declared JSON (every body this API takes is)."""
    media = (_header(event, "content-type") or "").split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _strip_cors(response: dict[str, Any]) -> None:
    for key in ("headers", "multiValueHeaders"):
        headers = response.get(key)
        if isinstance(headers, dict):
            for name in [n for n in headers if n.lower().startswith("access-control-")]:
                del headers[name]


@dataclass(frozen=True)
class RequestLog:
    """What one request log line says (never headers, bodies or tokens)."""

    method: str
    resource: str
    status: int
    milliseconds: float


class ApiApp:
    """The function's request path around the resolver."""

    def __init__(
        self,
        resolver: APIGatewayRestResolver,
        *,
        cors_origins: Sequence[str] = (),
        max_body_bytes: int = 16 * 1024,
        log_request: Callable[[RequestLog], None] = lambda entry: None,
        log_unexpected: Callable[[str], None] = lambda error_type: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._origins = frozenset(cors_origins)
        self._max_body = max_body_bytes
        self._log_request = log_request
        self._log_unexpected = log_unexpected
        self._clock = clock

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        started = self._clock()
        size = body_size(event)
        if size > self._max_body:
            response = self._error(PayloadTooLargeError())
        elif size and not _json_body(event):
            response = self._error(UnsupportedMediaTypeError())
        elif size and not _utf8_body(event):
            problem = FieldProblem("body", "json_invalid", "the body is not UTF-8 JSON")
            response = self._error(ValidationFailedError([problem]))
        else:
            try:
                response = self._resolver.resolve(event, context)
            except Exception as exc:  # logged by type only: messages can carry secrets
                self._log_unexpected(type(exc).__name__)
                response = self._error(ApiError())
        origin = _origin(event)
        if origin is None or origin not in self._origins:
            _strip_cors(response)
        self._log_request(
            RequestLog(
                method=str(event.get("httpMethod", "")),
                resource=str(event.get("resource", "")),
                status=int(response.get("statusCode", 0)),
                milliseconds=round((self._clock() - started) * 1000, 2),
            )
        )
        return response

    @staticmethod
    def _error(error: ApiError) -> dict[str, Any]:
        return {
            "statusCode": error.status,
            "headers": {"Content-Type": content_types.APPLICATION_JSON, **error.headers},
            "body": json.dumps(error.body()),
            "isBase64Encoded": False,
        }


def observed_app(
    resolver: APIGatewayRestResolver,
    obs: Observability,
    *,
    cors_origins: Sequence[str],
    max_body_bytes: int,
) -> ApiApp:
    """An :class:`ApiApp` logging each request (one line) and counting answers by class."""

    def log_request(entry: RequestLog) -> None:
        obs.logger.info(
            "request",
            extra={
                "method": entry.method,
                "resource": entry.resource,
                "status": entry.status,
                "ms": entry.milliseconds,
            },
        )
        obs.count(f"Status{entry.status // 100}xx")

    def log_unexpected(error_type: str) -> None:
        obs.count("UnexpectedErrors")
        obs.logger.error("unexpected error", extra={"error": error_type})

    return ApiApp(
        resolver,
        cors_origins=cors_origins,
        max_body_bytes=max_body_bytes,
        log_request=log_request,
        log_unexpected=log_unexpected,
    )
