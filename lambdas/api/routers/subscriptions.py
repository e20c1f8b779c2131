"""What the feed streams: the desired set (read, change within capacity) and its status."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from lambdas.api.context import AUTHENTICATED, Dependencies, documented, new_router, principal
from lambdas.api.errors import ServiceUnavailableError
from lambdas.api.models import Envelope
from lambdas.api.subscription_models import (
    SubscriptionChangeRequest,
    Subscriptions,
    SubscriptionStatus,
)
from lambdas.api.subscriptions import SubscriptionService


def _logic(deps: Dependencies) -> SubscriptionService:
    if deps.subscriptions is None:
        raise ServiceUnavailableError()
    return deps.subscriptions


def build(deps: Dependencies) -> APIGatewayRouter:
    """The subscriptions router."""
    router = new_router()

    @router.get(
        "/subscriptions",
        summary="The desired subscriptions: every user's instruments and ATM windows",
        tags=["subscriptions"],
        security=AUTHENTICATED,
        responses=documented("The desired set and the capacity it is planned against", (401, 503)),
    )
    def read_subscriptions() -> Envelope[Subscriptions]:
        principal(router)
        return Envelope(data=_logic(deps).read())

    @router.post(
        "/subscriptions",
        summary="Change your subscriptions (instruments by token or EXCHANGE:TRADINGSYMBOL, "
        "modes, ATM windows)",
        description="Checked whole against today's instruments, then against the active "
        "accounts' capacity (3 connections x 3000 instruments each): a change that would need "
        "more is refused with the numbers (409 capacity_exceeded) and nothing is written. The "
        "feed applies a change within its poll interval; see /subscriptions/status.",
        tags=["subscriptions"],
        security=AUTHENTICATED,
        responses=documented("The desired set after the change", (401, 409, 413, 422, 503)),
    )
    def change_subscriptions(change: SubscriptionChangeRequest) -> Envelope[Subscriptions]:
        return Envelope(data=_logic(deps).change(principal(router), change))

    @router.get(
        "/subscriptions/status",
        summary="What the feed streams: desired, streaming, not fitted, per account",
        tags=["subscriptions"],
        security=AUTHENTICATED,
        responses=documented("The feed's latest status record", (401, 503)),
    )
    def subscription_status() -> Envelope[SubscriptionStatus]:
        principal(router)
        return Envelope(data=_logic(deps).status())

    return router
