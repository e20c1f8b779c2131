"""Portfolio, funds, profile and the margin calculators."""

from __future__ import annotations

from typing import Annotated, Literal

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from lambdas.api.context import AUTHENTICATED, Dependencies, allowed, documented, new_router, ok
from lambdas.api.models import (
    ACCOUNT_ID_PATTERN,
    BasketMargins,
    ConvertPositionRequest,
    Envelope,
    Holding,
    Margins,
    MarginsRequest,
    OrderMargin,
    Positions,
    Profile,
    SegmentMargins,
)

AccountPath = Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN, description="The Kite account")]
CONVERT_ERRORS = (400, 401, 403, 413, 422, 424, 429, 502, 503)


def build(deps: Dependencies) -> APIGatewayRouter:
    """The portfolio router."""
    router = new_router()
    trading = deps.trading

    @router.get(
        "/accounts/<account_id>/portfolio/positions",
        summary="Net and day positions",
        tags=["portfolio"],
        security=AUTHENTICATED,
        responses=documented("Positions"),
    )
    def positions(account_id: AccountPath) -> Envelope[Positions]:
        allowed(router, deps, account_id, "view")
        return ok(trading.read(account_id, lambda kite: kite.positions()))

    @router.put(
        "/accounts/<account_id>/portfolio/positions",
        summary="Convert a position's product",
        tags=["portfolio"],
        security=AUTHENTICATED,
        responses=documented("Kite's answer (true)", CONVERT_ERRORS),
    )
    def convert_position(
        account_id: AccountPath, conversion: ConvertPositionRequest
    ) -> Envelope[bool]:
        allowed(router, deps, account_id, "trade")
        return ok(
            trading.read(account_id, lambda kite: kite.convert_position(**conversion.model_dump()))
        )

    @router.get(
        "/accounts/<account_id>/portfolio/holdings",
        summary="Holdings",
        tags=["portfolio"],
        security=AUTHENTICATED,
        responses=documented("Holdings"),
    )
    def holdings(account_id: AccountPath) -> Envelope[list[Holding]]:
        allowed(router, deps, account_id, "view")
        return ok(trading.read(account_id, lambda kite: kite.holdings()))

    @router.get(
        "/accounts/<account_id>/user/margins",
        summary="Funds and margins, per segment",
        tags=["portfolio"],
        security=AUTHENTICATED,
        responses=documented("Funds and margins"),
    )
    def margins(account_id: AccountPath) -> Envelope[Margins]:
        allowed(router, deps, account_id, "view")
        return ok(trading.read(account_id, lambda kite: kite.margins()))

    @router.get(
        "/accounts/<account_id>/user/margins/<segment>",
        summary="Funds and margins of one segment",
        tags=["portfolio"],
        security=AUTHENTICATED,
        responses=documented("One segment's funds and margins"),
    )
    def segment_margins(
        account_id: AccountPath, segment: Annotated[Literal["equity", "commodity"], Path()]
    ) -> Envelope[SegmentMargins]:
        allowed(router, deps, account_id, "view")
        return ok(trading.read(account_id, lambda kite: kite.margins(segment)))

    @router.get(
        "/accounts/<account_id>/user/profile",
        summary="The account's Kite profile",
        tags=["portfolio"],
        security=AUTHENTICATED,
        responses=documented("The profile"),
    )
    def profile(account_id: AccountPath) -> Envelope[Profile]:
        allowed(router, deps, account_id, "view")
        return ok(trading.read(account_id, lambda kite: kite.profile()))

    @router.post(
        "/accounts/<account_id>/margins/orders",
        summary="Margins each order would need",
        tags=["margins"],
        security=AUTHENTICATED,
        responses=documented("One entry per order"),
    )
    def order_margins(
        account_id: AccountPath, request: MarginsRequest
    ) -> Envelope[list[OrderMargin]]:
        allowed(router, deps, account_id, "view")
        params = [o.model_dump(exclude_none=True) for o in request.orders]
        return ok(trading.read(account_id, lambda kite: kite.order_margins(params)))

    @router.post(
        "/accounts/<account_id>/margins/basket",
        summary="Margins a basket would need, netted",
        tags=["margins"],
        security=AUTHENTICATED,
        responses=documented("Initial, final and per-order margins"),
    )
    def basket_margins(
        account_id: AccountPath,
        request: MarginsRequest,
        mode: Annotated[Literal["compact"] | None, Query()] = None,
    ) -> Envelope[BasketMargins]:
        allowed(router, deps, account_id, "view")
        params = [o.model_dump(exclude_none=True) for o in request.orders]
        return ok(
            trading.read(
                account_id,
                lambda kite: kite.basket_order_margins(
                    params, consider_positions=request.consider_positions, mode=mode
                ),
            )
        )

    return router
