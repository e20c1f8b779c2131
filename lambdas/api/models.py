"""Request and response models, named as Kite names things.

Requests are strict (``extra="forbid"``: a misspelt parameter is an error,
never silently ignored) and use Kite's parameter names, so a Kite user reads
them without a glossary. Responses follow Kite's documented answers (the
samples Zerodha publishes for every endpoint) and allow extra fields: a
field Kite adds tomorrow passes through instead of failing validation.

Success answers keep Kite's envelope, ``{"status": "success", "data": ...}``;
errors are ``{"status": "error", "code": ..., "message": ...}`` (see
:mod:`lambdas.api.errors`).
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

Variety = Literal["regular", "amo", "co", "iceberg", "auction"]
TransactionType = Literal["BUY", "SELL"]
Product = Literal["CNC", "NRML", "MIS", "MTF"]
OrderType = Literal["MARKET", "LIMIT", "SL", "SL-M"]
Validity = Literal["DAY", "IOC", "TTL"]
PositionType = Literal["day", "overnight"]
GttType = Literal["single", "two-leg"]
Role = Literal["trade", "view"]

ACCOUNT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ORDER_ID_PATTERN = r"^[0-9A-Za-z_-]{1,32}$"
USER_ID_PATTERN = r"^[A-Za-z0-9_.@:-]{1,128}$"
EXCHANGE_PATTERN = r"^[A-Z]{2,8}$"
TAG_PATTERN = r"^[A-Za-z0-9]{1,20}$"
MAX_QUANTITY = 100_000_000
MAX_PRICE = 1e9
MAX_BASKET_ORDERS = 20
MAX_TTL_MINUTES = 24 * 60

AccountId = Annotated[str, Field(pattern=ACCOUNT_ID_PATTERN)]
Exchange = Annotated[str, Field(pattern=EXCHANGE_PATTERN, description="NSE, BSE, NFO, CDS, ...")]
TradingSymbol = Annotated[str, Field(min_length=1, max_length=64)]
Quantity = Annotated[int, Field(gt=0, le=MAX_QUANTITY)]
Price = Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)]
MarketProtection = Annotated[
    float,
    Field(
        ge=-1,
        le=100,
        allow_inf_nan=False,
        description="-1 for Kite's automatic protection, or a percentage above 0 up to 100",
    ),
]


class ApiModel(BaseModel):
    """Every model of the API: its validator is built on first use, not when it is defined.

    A cold start then builds only the models of the route it serves (about
    a hundred milliseconds of the import otherwise go to building them all).
    """

    model_config = ConfigDict(defer_build=True)


class Strict(ApiModel):
    """Request bodies: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Open(ApiModel):
    """Kite answers: unknown fields pass through."""

    model_config = ConfigDict(extra="allow")


# --------------------------------------------------------------------------- requests


class PlaceOrderRequest(Strict):
    """``POST /accounts/{account_id}/orders``: Kite's place-order parameters."""

    variety: Variety = "regular"
    exchange: Exchange
    tradingsymbol: TradingSymbol
    transaction_type: TransactionType
    quantity: Quantity
    product: Product
    order_type: OrderType
    price: Price | None = None
    trigger_price: Price | None = None
    validity: Validity = "DAY"
    validity_ttl: Annotated[int, Field(ge=1, le=MAX_TTL_MINUTES)] | None = None
    disclosed_quantity: Annotated[int, Field(ge=0, le=MAX_QUANTITY)] | None = None
    iceberg_legs: Annotated[int, Field(ge=2, le=10)] | None = None
    iceberg_quantity: Quantity | None = None
    auction_number: Annotated[str, Field(pattern=r"^[0-9]{1,10}$")] | None = None
    market_protection: MarketProtection | None = None
    tag: Annotated[str, Field(pattern=TAG_PATTERN)] | None = Field(
        default=None,
        description="Your label for the order, kept with it here; Kite's own tag "
        "carries this request's idempotency reference",
    )


class ModifyOrderRequest(Strict):
    """``PUT /accounts/{account_id}/orders/{order_id}``: what to change."""

    variety: Variety = "regular"
    parent_order_id: Annotated[str, Field(pattern=ORDER_ID_PATTERN)] | None = None
    quantity: Quantity | None = None
    price: Price | None = None
    order_type: OrderType | None = None
    trigger_price: Price | None = None
    validity: Validity | None = None
    disclosed_quantity: Annotated[int, Field(ge=0, le=MAX_QUANTITY)] | None = None
    market_protection: MarketProtection | None = None


class ExitOrderRequest(Strict):
    """``POST /accounts/{account_id}/orders/{order_id}/exit``: a cover order's exit."""

    variety: Literal["co"] = "co"
    parent_order_id: Annotated[str, Field(pattern=ORDER_ID_PATTERN)] | None = None


class BasketRequest(Strict):
    """``POST /accounts/{account_id}/baskets``: orders placed one after another, in order."""

    orders: Annotated[list[PlaceOrderRequest], Field(min_length=1, max_length=MAX_BASKET_ORDERS)]


class MarginOrder(Strict):
    """One order to compute margins for (Kite's order-margins parameters)."""

    exchange: Exchange
    tradingsymbol: TradingSymbol
    transaction_type: TransactionType
    variety: Variety = "regular"
    product: Product
    order_type: OrderType
    quantity: Quantity
    price: Price | None = None
    trigger_price: Price | None = None


class MarginsRequest(Strict):
    """``POST .../margins/orders`` and ``.../margins/basket``."""

    orders: Annotated[list[MarginOrder], Field(min_length=1, max_length=50)]
    consider_positions: bool = True


class ConvertPositionRequest(Strict):
    """``PUT /accounts/{account_id}/portfolio/positions``: Kite's conversion parameters."""

    exchange: Exchange
    tradingsymbol: TradingSymbol
    transaction_type: TransactionType
    position_type: PositionType
    quantity: Quantity
    old_product: Product
    new_product: Product


class GttOrder(Strict):
    """One order a GTT places when it triggers (always LIMIT)."""

    transaction_type: TransactionType
    quantity: Quantity
    product: Product
    order_type: Literal["LIMIT"] = "LIMIT"
    price: Annotated[float, Field(gt=0, le=MAX_PRICE, allow_inf_nan=False)]


class GttRequest(Strict):
    """``POST``/``PUT`` GTT: Kite's ``place_gtt`` parameters."""

    trigger_type: GttType
    exchange: Exchange
    tradingsymbol: TradingSymbol
    trigger_values: Annotated[
        list[Annotated[float, Field(gt=0, le=MAX_PRICE, allow_inf_nan=False)]],
        Field(min_length=1, max_length=2),
    ]
    last_price: Annotated[float, Field(gt=0, le=MAX_PRICE, allow_inf_nan=False)]
    orders: Annotated[list[GttOrder], Field(min_length=1, max_length=2)]


class GrantRequest(Strict):
    """``PUT /admin/grants/{user_id}/{account_id}``."""

    role: Role


# --------------------------------------------------------------------------- responses

T = TypeVar("T")


class Envelope(ApiModel, Generic[T]):
    """Kite's success envelope."""

    status: Literal["success"] = "success"
    data: T


class ErrorDetail(ApiModel):
    """One broken rule of a request."""

    field: str
    rule: str
    message: str


class ErrorBody(ApiModel):
    """Every error answer."""

    status: Literal["error"] = "error"
    code: str = Field(description="A stable code (see the README's table)")
    message: str
    details: list[ErrorDetail] | None = None
    kite_error_type: str | None = None


class OrderId(Open):
    """Kite's answer to place, modify, cancel and exit."""

    order_id: str


class PlacedOrder(OrderId):
    """A placed order: Kite's answer plus the tag it carries at Kite."""

    tag: str | None = Field(default=None, description="The Kite tag this request's order carries")


class Order(Open):
    """One order, as Kite's order book and history show it."""

    order_id: str
    status: str | None = None
    placed_by: str | None = None
    exchange_order_id: str | None = None
    parent_order_id: str | None = None
    status_message: str | None = None
    status_message_raw: str | None = None
    order_timestamp: str | None = None
    exchange_update_timestamp: str | None = None
    exchange_timestamp: str | None = None
    variety: str | None = None
    modified: bool | None = None
    exchange: str | None = None
    tradingsymbol: str | None = None
    instrument_token: int | None = None
    order_type: str | None = None
    transaction_type: str | None = None
    validity: str | None = None
    validity_ttl: int | None = None
    product: str | None = None
    quantity: float | None = None
    disclosed_quantity: float | None = None
    price: float | None = None
    trigger_price: float | None = None
    average_price: float | None = None
    filled_quantity: float | None = None
    pending_quantity: float | None = None
    cancelled_quantity: float | None = None
    market_protection: float | None = None
    meta: dict[str, Any] | None = None
    tag: str | None = None
    tags: list[str] | None = None
    guid: str | None = None


class Trade(Open):
    """One fill."""

    trade_id: str
    order_id: str
    exchange: str | None = None
    tradingsymbol: str | None = None
    instrument_token: int | None = None
    product: str | None = None
    average_price: float | None = None
    quantity: float | None = None
    exchange_order_id: str | None = None
    transaction_type: str | None = None
    fill_timestamp: str | None = None
    order_timestamp: str | None = None
    exchange_timestamp: str | None = None


class BasketItemResult(ApiModel):
    """What happened to one order of a basket (there is no rollback: each stands alone)."""

    index: int
    status: Literal["success", "error"]
    order_id: str | None = None
    tag: str | None = None
    code: str | None = None
    message: str | None = None
    details: list[ErrorDetail] | None = None
    kite_error_type: str | None = None


class BasketResult(ApiModel):
    """A basket: one result per order, in the order given."""

    orders: list[BasketItemResult]


class Position(Open):
    """One position row."""

    tradingsymbol: str
    exchange: str
    instrument_token: int | None = None
    product: str | None = None
    quantity: float | None = None
    overnight_quantity: float | None = None
    multiplier: float | None = None
    average_price: float | None = None
    close_price: float | None = None
    last_price: float | None = None
    value: float | None = None
    pnl: float | None = None
    m2m: float | None = None
    unrealised: float | None = None
    realised: float | None = None
    buy_quantity: float | None = None
    buy_price: float | None = None
    buy_value: float | None = None
    sell_quantity: float | None = None
    sell_price: float | None = None
    sell_value: float | None = None


class Positions(Open):
    """Net and day positions."""

    net: list[Position]
    day: list[Position]


class MtfHolding(Open):
    """A holding's margin trading facility part."""

    quantity: float | None = None
    used_quantity: float | None = None
    average_price: float | None = None
    value: float | None = None
    initial_margin: float | None = None


class Holding(Open):
    """One holding."""

    tradingsymbol: str
    exchange: str
    instrument_token: int | None = None
    isin: str | None = None
    product: str | None = None
    price: float | None = None
    quantity: float | None = None
    used_quantity: float | None = None
    t1_quantity: float | None = None
    realised_quantity: float | None = None
    authorised_quantity: float | None = None
    authorised_date: str | None = None
    authorisation: dict[str, Any] | None = None
    opening_quantity: float | None = None
    short_quantity: float | None = None
    collateral_quantity: float | None = None
    collateral_type: str | None = None
    discrepancy: bool | None = None
    average_price: float | None = None
    last_price: float | None = None
    close_price: float | None = None
    pnl: float | None = None
    day_change: float | None = None
    day_change_percentage: float | None = None
    mtf: MtfHolding | None = None


class SegmentMargins(Open):
    """Funds and margins of one segment."""

    enabled: bool | None = None
    net: float | None = None
    available: dict[str, Any] | None = None
    utilised: dict[str, Any] | None = None


class Margins(Open):
    """Funds and margins per segment."""

    equity: SegmentMargins | None = None
    commodity: SegmentMargins | None = None


class Profile(Open):
    """The account's Kite user profile."""

    user_id: str
    user_type: str | None = None
    email: str | None = None
    user_name: str | None = None
    user_shortname: str | None = None
    broker: str | None = None
    exchanges: list[str] | None = None
    products: list[str] | None = None
    order_types: list[str] | None = None
    avatar_url: str | None = None
    meta: dict[str, Any] | None = None


class OrderMargin(Open):
    """Margins of one order."""

    type: str | None = None
    tradingsymbol: str | None = None
    exchange: str | None = None
    span: float | None = None
    exposure: float | None = None
    option_premium: float | None = None
    additional: float | None = None
    bo: float | None = None
    cash: float | None = None
    var: float | None = None
    pnl: dict[str, Any] | None = None
    leverage: float | None = None
    charges: dict[str, Any] | None = None
    total: float | None = None


class BasketMargins(Open):
    """Margins of a basket: before and after netting, and per order."""

    initial: OrderMargin | None = None
    final: OrderMargin | None = None
    orders: list[OrderMargin] | None = None


class GttCondition(Open):
    """What a GTT watches."""

    exchange: str | None = None
    tradingsymbol: str | None = None
    trigger_values: list[float] | None = None
    last_price: float | None = None
    instrument_token: int | None = None


class Gtt(Open):
    """One GTT trigger."""

    id: int
    user_id: str | None = None
    parent_trigger: Any = None
    type: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    expires_at: str | None = None
    status: str | None = None
    condition: GttCondition | None = None
    orders: list[dict[str, Any]] | None = None
    meta: dict[str, Any] | None = None


class TriggerId(Open):
    """Kite's answer to GTT create, modify and delete."""

    trigger_id: int


class Grant(ApiModel):
    """One user's role on one account."""

    user_id: str
    account_id: str
    role: Role


class Grants(ApiModel):
    """A list of grants."""

    grants: list[Grant]


class Health(ApiModel):
    """The health answer (no internals)."""

    status: Literal["ok"] = "ok"


class PostbackAccepted(ApiModel):
    """A postback was verified; ``stored`` is False when the same update was already stored."""

    stored: bool
