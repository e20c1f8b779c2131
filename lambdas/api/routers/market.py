"""Market data: instrument search and lookup, latest quotes, option chains, candles.

Served by the market-data function (``lambdas.api.market_handler``), which
carries the option math; any authenticated user may read (market data is
not per account). Instants without a timezone are read as IST, as Kite's
historical API reads them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from lambdas.api.context import (
    AUTHENTICATED,
    FUNCTION_EXTENSION,
    Dependencies,
    documented,
    new_router,
    principal,
)
from lambdas.api.errors import ServiceUnavailableError
from lambdas.api.instrument_refs import INSTRUMENT_REF_PATTERN
from lambdas.api.market import MarketData
from lambdas.api.market_models import (
    Candles,
    InstrumentInfo,
    InstrumentList,
    Interval,
    IsoDate,
    IsoInstant,
    OptionChain,
    Quotes,
)
from lambdas.api.models import Envelope
from ticker_core.tz import IST

InstrumentPath = Annotated[
    str,
    Path(
        pattern=INSTRUMENT_REF_PATTERN,
        description="An instrument_token, or EXCHANGE:TRADINGSYMBOL (URL-encoded)",
    ),
]
UnderlyingPath = Annotated[str, Path(pattern=r"^[A-Z0-9&_-]{1,32}$", description="e.g. NIFTY")]
Exchange = Annotated[str | None, Query(pattern=r"^[A-Z]{2,8}$")]
READ_ERRORS = (401, 404, 422, 503)
MARKET_FUNCTION = {FUNCTION_EXTENSION: "market"}
"""Marks the operations the market-data function serves (the gateway routes by it)."""
MAX_QUOTES = 500


def _logic(deps: Dependencies) -> MarketData:
    if deps.market is None:
        raise ServiceUnavailableError()
    return deps.market


def json_answer(data: Any) -> Response[str]:
    """Kite's success envelope around ``data``, written once by orjson.

    Option chains (400 options) and candles (a month of minutes is 8,250 rows)
    are the API's largest answers: validating and serializing them value by
    value cost several times the query. Their shape is the documented model's
    (``documented_json``), which the unit tests check answer by answer.
    """
    body = orjson.dumps({"status": "success", "data": data}).decode()
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=body)


def documented_json(description: str, model: Any) -> dict[int, Any]:
    """The responses of a route answered by :func:`json_answer`: ``model`` on 200."""
    return {
        **documented(description, READ_ERRORS),
        200: {"description": description, "content": {"application/json": {"model": model}}},
    }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=IST)


def build(deps: Dependencies) -> APIGatewayRouter:
    """The market-data router."""
    router = new_router()

    @router.get(
        "/market/instruments",
        summary="Search today's instruments",
        description="Every filter given must match; prefix matches the start of tradingsymbol.",
        tags=["market"],
        security=AUTHENTICATED,
        openapi_extensions=MARKET_FUNCTION,
        responses=documented("Matching instruments, by tradingsymbol", (401, 422, 503)),
    )
    def search_instruments(
        prefix: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        exchange: Exchange = None,
        segment: Annotated[str | None, Query(pattern=r"^[A-Z-]{2,16}$")] = None,
        underlying: Annotated[str | None, Query(pattern=r"^[A-Z0-9&_-]{1,32}$")] = None,
        expiry: IsoDate | None = None,
        instrument_type: Annotated[str | None, Query(pattern=r"^(EQ|FUT|CE|PE)$")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Envelope[InstrumentList]:
        principal(router)
        return Envelope(
            data=_logic(deps).search(
                prefix=prefix,
                exchange=exchange,
                segment=segment,
                underlying=underlying,
                expiry=expiry,
                instrument_type=instrument_type,
                limit=limit,
            )
        )

    @router.get(
        "/market/instruments/<instrument>",
        summary="One instrument by token or EXCHANGE:TRADINGSYMBOL",
        tags=["market"],
        security=AUTHENTICATED,
        openapi_extensions=MARKET_FUNCTION,
        responses=documented("The instrument", READ_ERRORS),
    )
    def lookup_instrument(instrument: InstrumentPath) -> Envelope[InstrumentInfo]:
        principal(router)
        return Envelope(data=_logic(deps).lookup(instrument))

    @router.get(
        "/market/quotes",
        summary="Latest stored quote of each instrument",
        tags=["market"],
        security=AUTHENTICATED,
        openapi_extensions=MARKET_FUNCTION,
        responses=documented("One result per instrument, in the order asked", (401, 422, 503)),
    )
    def quotes(
        i: Annotated[
            list[Annotated[str, Query(pattern=INSTRUMENT_REF_PATTERN)]],
            Query(min_length=1, max_length=MAX_QUOTES, description="Repeat: ?i=NSE:INFY&i=256265"),
        ],
    ) -> Envelope[Quotes]:
        principal(router)
        return Envelope(data=_logic(deps).quotes(i))

    @router.get(
        "/market/option-chain/<underlying>",
        summary="An option chain with last price, OI, IV and Greeks on one forward",
        description="Every strike's call and put for one expiry (default: the nearest live "
        "one), valued at the answer's instant on the same-expiry future's price, else on "
        "put-call parity nearest the money; with the ATM strike and each value's age.",
        tags=["market"],
        security=AUTHENTICATED,
        openapi_extensions=MARKET_FUNCTION,
        responses=documented_json("The chain", Envelope[OptionChain]),
    )
    def option_chain(
        underlying: UnderlyingPath,
        expiry: IsoDate | None = None,
        exchange: Exchange = None,
    ) -> Response[str]:  # written here: see json_answer
        principal(router)
        return json_answer(_logic(deps).option_chain(underlying, expiry, exchange))

    @router.get(
        "/market/candles/<instrument>",
        summary="Candles from the stored minute bars (and Kite's history before them)",
        description="Intervals 1m, 5m, 15m, 1h (aligned to the 09:15 IST open) and 1d (IST "
        "days). Options carry IV and Greeks at each stored candle's close. from/to without a "
        "timezone are IST.",
        tags=["market"],
        security=AUTHENTICATED,
        openapi_extensions=MARKET_FUNCTION,
        responses=documented_json("Candles, oldest first", Envelope[Candles]),
    )
    def candles(
        instrument: InstrumentPath,
        start: Annotated[IsoInstant, Query(alias="from")],
        end: Annotated[IsoInstant, Query(alias="to")],
        interval: Interval = "1m",
    ) -> Response[str]:  # written here: see json_answer
        principal(router)
        table = _logic(deps).candles(instrument, interval, _aware(start), _aware(end))
        return json_answer(table.data())

    return router
