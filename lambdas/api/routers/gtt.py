"""Good-till-triggered orders: create (single, two-leg), list, get, modify, delete."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Header, Path
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from lambdas.api.context import (
    AUTHENTICATED,
    READ_ERRORS,
    WRITE_ERRORS,
    Dependencies,
    allowed,
    documented,
    idempotent_write,
    new_router,
    ok,
)
from lambdas.api.idempotency import KEY_PATTERN
from lambdas.api.models import ACCOUNT_ID_PATTERN, Envelope, Gtt, GttRequest, TriggerId

AccountPath = Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN, description="The Kite account")]
TriggerPath = Annotated[int, Path(ge=1, le=2**53, description="Kite's trigger id")]
KeyHeader = Annotated[
    str,
    Header(alias="Idempotency-Key", pattern=KEY_PATTERN.pattern, description="One per action"),
]
CHANGE_ERRORS = (400, 401, 403, 404, 413, 422, 424, 429, 502, 503)


def build(deps: Dependencies) -> APIGatewayRouter:
    """The GTT router."""
    router = new_router()
    trading = deps.trading

    @router.post(
        "/accounts/<account_id>/gtt/triggers",
        summary="Create a GTT (single or two-leg)",
        tags=["gtt"],
        security=AUTHENTICATED,
        responses=documented("The trigger id", WRITE_ERRORS),
    )
    def create_gtt(
        account_id: AccountPath, gtt: GttRequest, idempotency_key: KeyHeader
    ) -> Response[Envelope[TriggerId]]:
        return idempotent_write(
            router,
            deps,
            account_id,
            "gtt_create",
            gtt.model_dump(),
            lambda caller, key: trading.create_gtt(caller, account_id, key, gtt),
        )

    @router.get(
        "/accounts/<account_id>/gtt/triggers",
        summary="The account's GTTs",
        tags=["gtt"],
        security=AUTHENTICATED,
        responses=documented("Every GTT"),
    )
    def list_gtts(account_id: AccountPath) -> Envelope[list[Gtt]]:
        allowed(router, deps, account_id, "view")
        return ok(trading.read(account_id, lambda kite: kite.get_gtts()))

    @router.get(
        "/accounts/<account_id>/gtt/triggers/<trigger_id>",
        summary="One GTT",
        tags=["gtt"],
        security=AUTHENTICATED,
        responses=documented("The GTT", READ_ERRORS),
    )
    def get_gtt(account_id: AccountPath, trigger_id: TriggerPath) -> Envelope[Gtt]:
        allowed(router, deps, account_id, "view")
        return ok(trading.read(account_id, lambda kite: kite.get_gtt(trigger_id)))

    @router.put(
        "/accounts/<account_id>/gtt/triggers/<trigger_id>",
        summary="Modify a GTT (the same change twice leaves it as once)",
        tags=["gtt"],
        security=AUTHENTICATED,
        responses=documented("The trigger id", CHANGE_ERRORS),
    )
    def modify_gtt(
        account_id: AccountPath, trigger_id: TriggerPath, gtt: GttRequest
    ) -> Envelope[TriggerId]:
        allowed(router, deps, account_id, "trade")
        trading.check_gtt(gtt)
        orders = [o.model_dump() for o in gtt.orders]
        return ok(
            trading.read(
                account_id,
                lambda kite: kite.modify_gtt(
                    trigger_id,
                    gtt.trigger_type,
                    gtt.tradingsymbol,
                    gtt.exchange,
                    list(gtt.trigger_values),
                    gtt.last_price,
                    orders,
                ),
            )
        )

    @router.delete(
        "/accounts/<account_id>/gtt/triggers/<trigger_id>",
        summary="Delete a GTT",
        tags=["gtt"],
        security=AUTHENTICATED,
        responses=documented("The trigger id", CHANGE_ERRORS),
    )
    def delete_gtt(account_id: AccountPath, trigger_id: TriggerPath) -> Envelope[TriggerId]:
        allowed(router, deps, account_id, "trade")
        return ok(trading.read(account_id, lambda kite: kite.delete_gtt(trigger_id)))

    return router
