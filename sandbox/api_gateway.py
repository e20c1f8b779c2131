"""A local API Gateway (REST API) on 127.0.0.1: routes, Cognito authorizer, proxy events.

What API Gateway does in front of the API function, done the same way here:

- **routes** come from ``openapi.json`` (the same document the CDK stack's
  REST API is built from): a path that matches no resource answers 403
  ``Missing Authentication Token``, as API Gateway does; ``OPTIONS`` goes to
  the function unauthenticated (its CORS preflight);
- **the Cognito authorizer** on every operation with ``security``: the
  ``Authorization`` header's ID token is verified against the user pool's
  JWKS (RS256), its issuer must be the pool's issuer *in AWS's form*
  (``https://cognito-idp.<region>.amazonaws.com/<pool id>``, configured
  apart from where the JWKS is fetched, since moto serves it on loopback),
  ``token_use`` must be ``id``, the audience one of the app clients, and it
  must not have expired; otherwise 401. The claims reach the function in
  ``requestContext.authorizer.claims``, every value a string as API
  Gateway passes them (a list of groups joined with commas);
- **the proxy event** has the REST API's (v1) shape: ``resource``, ``path``,
  ``httpMethod``, single- and multi-value headers and query strings,
  ``pathParameters``, ``requestContext`` (stage, ids, identity), ``body``
  (base64 when not text);
- **the answer**: the function's ``statusCode``/``headers``/
  ``multiValueHeaders``/``body``; a function error, a timeout or an answer
  without a status is 502 ``Internal server error``. Bodies over 10 MB are
  refused with 413 before the function is called.

The functions are invoked through ``invoke`` (the sandbox's Lambda runtime,
or a direct call in tests; moto cannot run Lambda proxy integrations), each
route to the function its operation names (``x-ticker-function``: the
market-data routes have their own).

The gateway's own refusals (401, 403 for an unknown route) answer in the
API's error shape; the CDK stack configures the same bodies as gateway
responses. moto's Cognito signs tokens with a key published in moto's
source: anyone can mint a token it accepts, so this is for the sandbox and
tests only.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from lambdas.api.context import FUNCTION_EXTENSION
from lambdas.common.cognito import (
    CognitoTokenVerifier,
    TokenRejectedError,
    claim_text,
    fetch_jwks,
)
from sandbox.esm import InvokeResult

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
STAGE = "v1"
API_ID = "sandboxapi"
ACCOUNT_ID = "123456789012"
TEXT_TYPES = ("application/json", "text/", "application/x-www-form-urlencoded", "application/xml")
Invoke = Callable[[dict[str, Any]], InvokeResult]


DEFAULT_FUNCTION = "api"


@dataclass(frozen=True)
class Route:
    """One resource and method of the REST API."""

    resource: str
    method: str
    pattern: re.Pattern[str]
    names: tuple[str, ...]
    authenticated: bool
    function: str = DEFAULT_FUNCTION
    """The function integrated with it (``x-ticker-function`` in ``openapi.json``)."""


def routes_from_openapi(document: Mapping[str, Any]) -> list[Route]:
    """The REST API's resources and methods as ``openapi.json`` declares them."""
    routes = []
    for resource, operations in document.get("paths", {}).items():
        names = tuple(re.findall(r"{(\w+)}", resource))
        regex = "^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(resource)) + "$"
        for method, operation in operations.items():
            routes.append(
                Route(
                    resource=resource,
                    method=method.upper(),
                    pattern=re.compile(regex),
                    names=names,
                    authenticated=bool(operation.get("security")),
                    function=str(operation.get(FUNCTION_EXTENSION, DEFAULT_FUNCTION)),
                )
            )
    # Static segments win over parameters, as API Gateway matches them.
    routes.sort(key=lambda r: (r.resource.count("{"), -len(r.resource)))
    return routes


class CognitoAuthorizer:
    """API Gateway's Cognito authorizer: the service's one token check, claims as strings."""

    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        client_ids: frozenset[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = CognitoTokenVerifier(
            issuer=issuer, audiences=client_ids, fetch_keys=fetch_jwks(jwks_url), clock=clock
        )

    def claims(self, authorization: str | None) -> dict[str, str]:
        """The verified token's claims, as strings; :class:`TokenRejectedError` otherwise."""
        claims = self._verifier.claims(authorization)
        return {name: claim_text(value) for name, value in claims.items()}


def _is_text(content_type: str | None) -> bool:
    media = (content_type or "").lower()
    return not media or any(media.startswith(t) for t in TEXT_TYPES) or "json" in media


def proxy_event(
    *,
    method: str,
    path: str,
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    route: Route | None = None,
    path_parameters: Mapping[str, str] | None = None,
    claims: Mapping[str, str] | None = None,
    source_ip: str = "127.0.0.1",
    stage: str = STAGE,
) -> dict[str, Any]:
    """A REST API (v1) Lambda proxy event for one request."""
    pairs = headers or []
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    params = parse_qsl(query, keep_blank_values=True)
    query_single = dict(params) or None
    query_multi: dict[str, list[str]] = {}
    for k, v in params:
        query_multi.setdefault(k, []).append(v)
    content_type = next((v for k, v in pairs if k.lower() == "content-type"), None)
    text = _is_text(content_type)
    encoded_body: str | None
    if not body:
        encoded_body = None
    elif text:
        try:
            encoded_body = body.decode("utf-8")
        except UnicodeDecodeError:
            text = False
            encoded_body = base64.b64encode(body).decode()
    else:
        encoded_body = base64.b64encode(body).decode()
    now = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    resource = route.resource if route else path
    user_agent = next((v for k, v in pairs if k.lower() == "user-agent"), "")
    context: dict[str, Any] = {
        "accountId": ACCOUNT_ID,
        "apiId": API_ID,
        "domainName": "127.0.0.1",
        "domainPrefix": "127",
        "extendedRequestId": request_id,
        "httpMethod": method,
        "identity": {
            "accessKey": None,
            "accountId": None,
            "caller": None,
            "cognitoAuthenticationProvider": None,
            "cognitoAuthenticationType": None,
            "cognitoIdentityId": None,
            "cognitoIdentityPoolId": None,
            "principalOrgId": None,
            "sourceIp": source_ip,
            "user": None,
            "userAgent": user_agent,
            "userArn": None,
        },
        "path": f"/{stage}{path}",
        "protocol": "HTTP/1.1",
        "requestId": request_id,
        "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "requestTimeEpoch": int(now.timestamp() * 1000),
        "resourceId": "local",
        "resourcePath": resource,
        "stage": stage,
    }
    if claims is not None:
        context["authorizer"] = {"claims": dict(claims)}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": query_single,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": dict(path_parameters) if path_parameters else None,
        "stageVariables": None,
        "requestContext": context,
        "body": encoded_body,
        "isBase64Encoded": bool(body) and not text,
    }


@dataclass
class GatewayAnswer:
    """What the gateway sends back."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _json_answer(status: int, body: Mapping[str, Any]) -> GatewayAnswer:
    return GatewayAnswer(status, [("Content-Type", "application/json")], json.dumps(body).encode())


def _refusal(status: int, code: str, message: str) -> GatewayAnswer:
    return _json_answer(status, {"status": "error", "code": code, "message": message})


BAD_GATEWAY = _json_answer(502, {"message": "Internal server error"})


class LocalApiGateway:
    """The REST API in front of its functions, without sockets (see :class:`ApiGatewayServer`).

    ``invoke`` is the one function's, or one per function name (a route goes to
    the function its operation names, ``x-ticker-function``, else ``api``).
    """

    def __init__(
        self,
        routes: list[Route],
        authorizer: CognitoAuthorizer,
        invoke: Invoke | Mapping[str, Invoke],
    ) -> None:
        self._routes = routes
        self._authorizer = authorizer
        self._invokes: Mapping[str, Invoke] = (
            invoke if isinstance(invoke, Mapping) else {DEFAULT_FUNCTION: invoke}
        )
        missing = {r.function for r in routes} - set(self._invokes)
        if missing:
            raise ValueError(f"no function to invoke for {sorted(missing)}")
        self._lock = threading.Lock()
        self.statuses: Counter[tuple[str, str, int]] = Counter()
        """Answers by (method, resource, status): what the report shows."""

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self._routes:
            if route.method != method:
                continue
            match = route.pattern.match(path)
            if match:
                return route, {k: unquote(v) for k, v in match.groupdict().items()}
        return None

    def _known_path(self, path: str) -> Route | None:
        return next((r for r in self._routes if r.pattern.match(path)), None)

    def handle(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str = "127.0.0.1",
    ) -> GatewayAnswer:
        """One request in, one answer out."""
        parts = urlsplit(target)
        path = parts.path or "/"
        answer, resource = self._answer(method, path, parts.query, headers, body, source_ip)
        with self._lock:
            self.statuses[(method, resource, answer.status)] += 1
        return answer

    def _answer(
        self,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
    ) -> tuple[GatewayAnswer, str]:
        if len(body) > MAX_BODY_BYTES:
            return _refusal(413, "payload_too_large", "Request too large"), path
        matched = self._match(method, path)
        claims: dict[str, str] | None = None
        if matched is None:
            known = self._known_path(path)
            if method != "OPTIONS" or known is None:
                return _refusal(403, "forbidden", "Missing Authentication Token"), "(none)"
            # CORS preflight: the function answers it, unauthenticated
            route = Route(
                known.resource, "OPTIONS", known.pattern, known.names, False, known.function
            )
            found = known.pattern.match(path)
            params = {k: unquote(v) for k, v in found.groupdict().items()} if found else {}
        else:
            route, params = matched
            if route.authenticated:
                authorization = next((v for k, v in headers if k.lower() == "authorization"), None)
                try:
                    claims = self._authorizer.claims(authorization)
                except TokenRejectedError:
                    return _refusal(401, "unauthorized", "Unauthorized"), route.resource
        event = proxy_event(
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=body,
            route=route,
            path_parameters=params,
            claims=claims,
            source_ip=source_ip,
        )
        result = self._invokes[route.function](event)
        return _function_answer(result), route.resource


def _function_answer(result: InvokeResult) -> GatewayAnswer:
    """The HTTP answer for a proxy integration's result (502 for anything malformed)."""
    payload = result.payload
    if result.failed or not isinstance(payload, dict):
        return BAD_GATEWAY
    status = payload.get("statusCode")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return BAD_GATEWAY
    headers: list[tuple[str, str]] = []
    multi = payload.get("multiValueHeaders") or {}
    single = payload.get("headers") or {}
    if not isinstance(multi, dict) or not isinstance(single, dict):
        return BAD_GATEWAY
    for name, values in multi.items():
        for value in values if isinstance(values, list) else [values]:
            headers.append((str(name), str(value)))
    seen = {name.lower() for name, _ in headers}
    for name, value in single.items():
        if name.lower() not in seen:
            headers.append((str(name), str(value)))
    body = payload.get("body") or ""
    if not isinstance(body, str):
        return BAD_GATEWAY
    try:
        data = base64.b64decode(body) if payload.get("isBase64Encoded") else body.encode()
    except ValueError:
        return BAD_GATEWAY
    return GatewayAnswer(status, headers, data)


class _Handler(BaseHTTPRequestHandler):
    gateway: LocalApiGateway
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            answer = _refusal(413, "payload_too_large", "Request too large")
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            answer = self.gateway.handle(
                self.command,
                self.path,
                [(k, v) for k, v in self.headers.items()],
                body,
                self.client_address[0],
            )
        self.send_response(answer.status)
        for name, value in answer.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def __getattr__(self, name: str) -> Any:
        # http.server looks up do_<METHOD>: every method goes to the gateway, which answers
        # what API Gateway answers (a method the API does not declare: 403).
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the report counts
        return


class _Server(ThreadingHTTPServer):
    # A burst of clients connecting at once must queue, not be reset (the default is 5).
    request_queue_size = 256


class ApiGatewayServer:
    """The local gateway on 127.0.0.1 (a thread per connection); ``url`` once started."""

    def __init__(self, gateway: LocalApiGateway, port: int = 0) -> None:
        handler = type("GatewayHandler", (_Handler,), {"gateway": gateway})
        self.gateway = gateway
        self._server = _Server(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL (the stage is not in the path: as a custom domain maps it)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ApiGatewayServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="api-gateway", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ApiGatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
