"""The WebSocket API's ``$connect`` authorizer: a Lambda REQUEST authorizer on Cognito tokens.

WebSocket APIs take no Cognito authorizer, so this function does what one
would: the client offers :data:`~lambdas.ws.protocol.SUBPROTOCOL` and its
Cognito ID token as subprotocols (``Sec-WebSocket-Protocol``, the
authorizer's identity source; browsers can set it, and unlike a query string
it stays out of access logs), the token is verified by
:mod:`lambdas.common.cognito`, and the answer is an IAM policy: ``Allow``
with the user in its context (``sub``, ``username``, ``groups``: what every
route then sees), or ``Deny``, which API Gateway answers with 403. The token
is never logged; a refusal is counted by its reason. The verifier (and its
cached keys) is built on the first invocation, never at import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambdas.common.cognito import CognitoTokenVerifier, TokenRejectedError, claim_text
from lambdas.common.observability import Observability
from lambdas.common.runtime import LambdaHandler, entry_point
from lambdas.ws.protocol import PROTOCOL_HEADER, header, offered_protocols, token_from_protocols
from lambdas.ws.settings import AuthorizerEnvironment

obs = Observability("ws-authorizer")


def policy(
    principal: str, effect: str, resource: str, context: dict[str, str] | None = None
) -> dict[str, Any]:
    """An authorizer answer: ``effect`` (Allow/Deny) on ``resource`` for ``principal``."""
    answer: dict[str, Any] = {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
    }
    if context:
        answer["context"] = context
    return answer


def authorize(event: dict[str, Any], verifier: CognitoTokenVerifier) -> tuple[dict[str, Any], str]:
    """The policy for a ``$connect`` request, and the outcome (``allowed`` or the refusal)."""
    resource = str(event.get("methodArn", ""))
    token = token_from_protocols(offered_protocols(header(event.get("headers"), PROTOCOL_HEADER)))
    try:
        claims = verifier.claims(token)
    except TokenRejectedError as exc:
        return policy("anonymous", "Deny", resource), exc.reason
    context = {
        "sub": claim_text(claims["sub"]),
        "username": claim_text(claims.get("cognito:username") or claims["sub"]),
        "groups": claim_text(claims.get("cognito:groups") or []),
    }
    return policy(context["sub"], "Allow", resource, context), "allowed"


@dataclass(frozen=True)
class Dependencies:
    """What one execution environment of the authorizer builds once and reuses."""

    verifier: CognitoTokenVerifier

    @classmethod
    def from_env(cls) -> Dependencies:
        """The pool ``COGNITO_*`` names; its keys are fetched on the first token."""
        return cls(CognitoTokenVerifier.from_settings(AuthorizerEnvironment.from_env().cognito))


def decide(event: dict[str, Any], deps: Dependencies) -> dict[str, Any]:
    """API Gateway (WebSocket ``$connect``, REQUEST authorizer) -> Allow or Deny."""
    answer, outcome = authorize(event, deps.verifier)
    obs.count("Allowed" if outcome == "allowed" else f"Denied_{outcome}")
    if outcome != "allowed":
        obs.logger.info("connection refused", extra={"reason": outcome})
    return answer


def make_handler(dependencies: Callable[[], Dependencies]) -> LambdaHandler:
    """The authorizer's entry point over ``dependencies`` (called every time: cache it)."""
    return entry_point(obs, decide, dependencies)


#: Built on the first invocation and kept for the execution environment's life.
environment = functools.cache(Dependencies.from_env)
handler = make_handler(environment)
