"""Orders: place, modify, cancel, exit, baskets, the order book, history and trades."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
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
from lambdas.api.models import (
    ACCOUNT_ID_PATTERN,
    ORDER_ID_PATTERN,
    BasketRequest,
    BasketResult,
    Envelope,
    ExitOrderRequest,
    ModifyOrderRequest,
    Order,
    OrderId,
    PlacedOrder,
    PlaceOrderRequest,
    Trade,
    Variety,
)

AccountPath = Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN, description="The Kite account")]
OrderPath = Annotated[str, Path(pattern=ORDER_ID_PATTERN, description="Kite's order id")]
KeyHeader = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN.pattern,
        description="One key per intended action; a retry with the same key and request "
        "returns the first answer",
    ),
]


def build(deps: Dependencies) -> APIGatewayRouter:
    """The orders router."""
    router = new_router()
    trading = deps.trading

    @router.post(
        "/accounts/<account_id>/orders",
        summary="Place an order (regular, amo, co, iceberg, auction)",
        tags=["orders"],
        security=AUTHENTICATED,
        responses=documented("The order id and the tag it carries at Kite", WRITE_ERRORS),
    )
    def place_order(
        account_id: AccountPath, order: PlaceOrderRequest, idempotency_key: KeyHeader
    ) -> Response[Envelope[PlacedOrder]]:
        return idempotent_write(
            router,
            deps,
            account_id,
            "place",
            order.model_dump(),
            lambda caller, key: trading.place(caller, account_id, key, order),
        )

    @router.post(
        "/accounts/<account_id>/baskets",
        summary="Place a basket: each order in turn, each with its own result (no rollback)",
        tags=["orders"],
        security=AUTHENTICATED,
        responses=documented("One result per order, in the order given", WRITE_ERRORS),
    )
    def place_basket(
        account_id: AccountPath, basket: BasketRequest, idempotency_key: KeyHeader
    ) -> Response[Envelope[BasketResult]]:
        return idempotent_write(
            router,
            deps,
            account_id,
            "basket",
            basket.model_dump(),
            lambda caller, key: trading.basket(caller, account_id, key, basket.orders),
        )

    @router.put(
        "/accounts/<account_id>/orders/<order_id>",
        summary="Modify an open order",
        tags=["orders"],
        security=AUTHENTICATED,
        responses=documented("The order id", WRITE_ERRORS),
    )
    def modify_order(
        account_id: AccountPath,
        order_id: OrderPath,
        change: ModifyOrderRequest,
        idempotency_key: KeyHeader,
    ) -> Response[Envelope[OrderId]]:
        params: dict[str, Any] = change.model_dump(exclude_none=True, exclude={"variety"})
        return idempotent_write(
            router,
            deps,
            account_id,
            f"modify:{order_id}",
            change.model_dump(),
            lambda caller, key: trading.change(
                caller,
                account_id,
                key,
                "modify",
                order_id,
                change,
                lambda kite: kite.modify_order(change.variety, order_id, **params),
            ),
        )

    @router.delete(
        "/accounts/<account_id>/orders/<order_id>",
        summary="Cancel an open order",
        tags=["orders"],
        security=AUTHENTICATED,
        responses=documented("The order id", WRITE_ERRORS),
    )
    def cancel_order(
        account_id: AccountPath,
        order_id: OrderPath,
        idempotency_key: KeyHeader,
        variety: Annotated[Variety, Query(description="The order's variety")] = "regular",
        parent_order_id: Annotated[str | None, Query(pattern=ORDER_ID_PATTERN)] = None,
    ) -> Response[Envelope[OrderId]]:
        return idempotent_write(
            router,
            deps,
            account_id,
            f"cancel:{order_id}",
            {"variety": variety, "parent_order_id": parent_order_id},
            lambda caller, key: trading.change(
                caller,
                account_id,
                key,
                "cancel",
                order_id,
                None,
                lambda kite: kite.cancel_order(variety, order_id, parent_order_id),
            ),
        )

    @router.post(
        "/accounts/<account_id>/orders/<order_id>/exit",
        summary="Exit a cover order",
        tags=["orders"],
        security=AUTHENTICATED,
        responses=documented("The order id", WRITE_ERRORS),
    )
    def exit_order(
        account_id: AccountPath,
        order_id: OrderPath,
        exit_request: ExitOrderRequest,
        idempotency_key: KeyHeader,
    ) -> Response[Envelope[OrderId]]:
        return idempotent_write(
            router,
            deps,
            account_id,
            f"exit:{order_id}",
            exit_request.model_dump(),
            lambda caller, key: trading.change(
                caller,
                account_id,
                key,
                "exit",
                order_id,
                exit_request,
                lambda kite: kite.exit_order(
                    exit_request.variety, order_id, exit_request.parent_order_id
                ),
            ),
        )

    @router.get(
        "/accounts/<account_id>/orders",
        summary="The day's orders",
        tags=["orders"],
        security=AUTHENTICATED,
        responses=documented("Every order of the day"),
    )
    def list_orders(account_id: AccountPath) -> Envelope[list[Order]]:
        allowed(router, deps, account_id, "view")
        return ok(trading.read(account_id, lambda kite: kite.orders()))

    @router.get(
        "/accounts/<account_id>/orders/<order_id>",
        summary="One order's history (every state it went through)",
        tags=["orders"],
        security=AUTHENTICATED,
        responses=documented("The order's states, oldest first", READ_ERRORS),
    )
    def order_history(account_id: AccountPath, order_id: OrderPath) -> Envelope[list[Order]]:
        allowed(router, deps, account_id, "view")
        return ok(trading.read(account_id, lambda kite: kite.order_history(order_id)))

    @router.get(
        "/accounts/<account_id>/orders/<order_id>/trades",
        summary="One order's trades",
        tags=["orders"],
        security=AUTHENTICATED,
        responses=documented("The order's fills", READ_ERRORS),
    )
    def order_trades(account_id: AccountPath, order_id: OrderPath) -> Envelope[list[Trade]]:
        allowed(router, deps, account_id, "view")
        return ok(trading.read(account_id, lambda kite: kite.order_trades(order_id)))

    @router.get(
        "/accounts/<account_id>/trades",
        summary="The day's trades",
        tags=["orders"],
        security=AUTHENTICATED,
        responses=documented("Every fill of the day"),
    )
    def trades(account_id: AccountPath) -> Envelope[list[Trade]]:
        allowed(router, deps, account_id, "view")
        return ok(trading.read(account_id, lambda kite: kite.trades()))

    return router
