"""Unauthenticated routes: health, and Kite's postbacks (verified by their checksum)."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from lambdas.api.context import Dependencies, documented, new_router
from lambdas.api.errors import PostbackRefusedError
from lambdas.api.models import Health, PostbackAccepted
from lambdas.api.updates import UpdateRejectedError, checksum_matches, order_update


def build(deps: Dependencies) -> APIGatewayRouter:
    """The public router."""
    router = new_router()

    @router.get(
        "/health",
        summary="Liveness (no internals)",
        tags=["health"],
        responses={200: {"description": "The function answers"}},
    )
    def health() -> Health:
        return Health()

    @router.post(
        "/postbacks",
        summary="Kite's order postbacks (refused unless the checksum verifies)",
        tags=["postbacks"],
        responses=documented("Verified; stored unless it was already", (403, 413, 503)),
    )
    def postback() -> PostbackAccepted:
        # The body is read raw (not modelled): Kite's payload is verified, never trusted first.
        try:
            raw = router.current_event.json_body
        except ValueError as exc:
            raise PostbackRefusedError() from exc
        if not isinstance(raw, dict):
            raise PostbackRefusedError()
        account_id = raw.get("user_id")
        secret = deps.api_secret(account_id) if isinstance(account_id, str) else None
        if secret is None or not checksum_matches(raw, secret):
            raise PostbackRefusedError()
        try:
            update = order_update(str(account_id), raw)
        except UpdateRejectedError as exc:
            raise PostbackRefusedError() from exc
        (stored,) = deps.updates.ingest([update], "postback")
        return PostbackAccepted(stored=stored)

    return router
