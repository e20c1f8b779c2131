"""The API's logic: orders placed at most once, Kite's failures mapped to documented codes.

A write (place, modify, cancel, exit, each basket order, GTT create) goes:

1. checked against the instrument registry (422, Kite never called);
2. a slot from the account's order limiter (429 after a bounded wait);
3. its intent recorded in PostgreSQL (``sent``), carrying the Kite ``tag``
   derived from the user and the idempotency key;
4. sent to Kite, and the intent settled with the answer.

When Kite's answer is lost (timeout, reset, 5xx after the request left, a
2xx that is not Kite's shape) the order may exist: its tag is looked up in
the account's order book, a few times over a short while, and the order
found is the answer. When it is not found the answer is 504
``order_outcome_unknown`` and the intent stays ``unknown`` (a later update
carrying the tag settles it): the order is never sent again under the same
key. A retry that finds the intent already recorded resolves it the same
way instead of calling Kite again; only an intent Kite certainly never saw
(``not_sent``) is sent again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol, TypeVar

from lambdas.api.auth import Principal
from lambdas.api.broker import KiteApi
from lambdas.api.dal.lifecycle import Intent, IntentRecord
from lambdas.api.errors import (
    ApiError,
    FieldProblem,
    KiteBadResponseError,
    KiteCallError,
    KiteFailureKind,
    KiteLoginRequiredError,
    KiteNotFoundError,
    KiteRateLimitedError,
    KiteRejectedError,
    KiteUnavailableError,
    OrderOutcomeUnknownError,
    ValidationFailedError,
)
from lambdas.api.idempotency import Answer
from lambdas.api.models import (
    BasketItemResult,
    ExitOrderRequest,
    GttRequest,
    ModifyOrderRequest,
    PlaceOrderRequest,
)
from lambdas.api.validation import InstrumentLookup, OrderRules, checked_gtt, checked_order

T = TypeVar("T")
TAG_PREFIX = "T"
TAG_HEX_CHARS = 19  # Kite tags: at most 20 alphanumeric characters

# How a failure that left Kite untouched is answered (reads, and writes Kite refused).
UNTOUCHED: dict[KiteFailureKind, type[ApiError]] = {
    KiteFailureKind.LOGIN_REQUIRED: KiteLoginRequiredError,
    KiteFailureKind.NOT_SENT: KiteUnavailableError,
    KiteFailureKind.RATE_LIMITED: KiteRateLimitedError,
    KiteFailureKind.NOT_FOUND: KiteNotFoundError,
    KiteFailureKind.REFUSED: KiteRejectedError,
    KiteFailureKind.OUTCOME_UNKNOWN: KiteUnavailableError,  # a read changes nothing
    KiteFailureKind.BAD_RESPONSE: KiteBadResponseError,
}
# A write's outcome is unknown when its answer was lost or malformed after it left.
AMBIGUOUS = frozenset({KiteFailureKind.OUTCOME_UNKNOWN, KiteFailureKind.BAD_RESPONSE})
# Nothing happened at Kite and a retry may succeed: not stored as the key's answer.
RETRYABLE = frozenset(
    {KiteFailureKind.NOT_SENT, KiteFailureKind.RATE_LIMITED, KiteFailureKind.LOGIN_REQUIRED}
)


def kite_tag(user_id: str, key: str, item: int = 0) -> str:
    """The Kite ``tag`` of the order a (user, key, basket item) places: 20 alphanumerics."""
    digest = hashlib.sha256(f"{user_id}\x00{key}\x00{item}".encode()).hexdigest()
    return TAG_PREFIX + digest[:TAG_HEX_CHARS]


def api_error(failure: KiteCallError) -> ApiError:
    """The documented answer to a Kite failure that changed nothing at Kite."""
    error_type = UNTOUCHED[failure.kind]
    extra = {"kite_error_type": failure.error_type} if failure.error_type else None
    headers = {"Retry-After": "1"} if failure.kind is KiteFailureKind.RATE_LIMITED else None
    # Kite's own refusal text is written for traders (funds, lot size...); other texts are not
    # passed on (they may be transport or internal details).
    message = failure.message if failure.kind is KiteFailureKind.REFUSED else None
    return error_type(message, headers=headers, extra=extra)


def success(data: Any, status_code: int = 200) -> Answer:
    """A stored answer in Kite's success envelope."""
    return {"status_code": status_code, "body": {"status": "success", "data": data}}


def failure_answer(error: ApiError) -> Answer:
    """A stored error answer (a refusal replays as it was)."""
    return {"status_code": error.status, "body": error.body()}


class Broker(Protocol):
    """Kite calls for an account (``lambdas.api.broker.KiteBroker``)."""

    def call(self, account_id: str, operation: Callable[[KiteApi], T]) -> T:
        """Run ``operation`` with the account's client; ``KiteCallError`` on failure."""
        ...


class Lifecycle(Protocol):
    """Intents in the order lifecycle store (``lambdas.api.dal.lifecycle``)."""

    def record_intent(self, intent: Intent) -> tuple[IntentRecord, bool]:
        """Store the intent as sent; the stored record and whether it is new."""
        ...

    def settle_intent(
        self,
        intent_id: int,
        status: str,
        *,
        order_id: str | None = None,
        trigger_id: int | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Record Kite's answer to the intent."""
        ...


class Limiter(Protocol):
    """The account's order rate (``lambdas.api.dal.limiter``)."""

    def acquire(self, account_id: str) -> float:
        """Take a slot (waiting a bounded time) or raise ``OrderRateLimitedError``."""
        ...


@dataclass(frozen=True)
class ResolveSettings:
    """How hard an ambiguous outcome is looked for in the order book."""

    attempts: int = 3
    delay_seconds: float = 0.5


def _order_id(data: Any) -> str:
    """The order id in Kite's answer (the data, or the client's bare id)."""
    if isinstance(data, Mapping):
        data = data.get("order_id")
    if isinstance(data, str | int) and str(data):
        return str(data)
    raise KiteCallError(KiteFailureKind.BAD_RESPONSE, "no order_id in Kite's answer")


def _trigger_id(data: Any) -> int:
    if isinstance(data, Mapping):
        data = data.get("trigger_id")
    if isinstance(data, int) and not isinstance(data, bool):
        return data
    raise KiteCallError(KiteFailureKind.BAD_RESPONSE, "no trigger_id in Kite's answer")


class Trading:
    """Reads and writes on Kite for one environment's dependencies."""

    def __init__(
        self,
        *,
        broker: Broker,
        lifecycle: Lifecycle,
        limiter: Limiter,
        registry: Callable[[], InstrumentLookup],
        rules: OrderRules,
        today: Callable[[], date],
        sleep: Callable[[float], None],
        resolve: ResolveSettings | None = None,
    ) -> None:
        self._broker = broker
        self._lifecycle = lifecycle
        self._limiter = limiter
        self._registry = registry
        self._rules = rules
        self._today = today
        self._sleep = sleep
        self._resolve = resolve or ResolveSettings()
        self.settle_failures = 0
        """Accepted orders whose intent could not be settled at once (for metrics)."""

    # -- reads ------------------------------------------------------------------------------

    def read(self, account_id: str, operation: Callable[[KiteApi], T]) -> T:
        """A Kite read; failures answered with their documented codes."""
        try:
            return self._broker.call(account_id, operation)
        except KiteCallError as failure:
            raise api_error(failure) from failure

    # -- orders -----------------------------------------------------------------------------

    def validate_order(self, order: PlaceOrderRequest, field_prefix: str = "") -> dict[str, Any]:
        """Kite's parameters for ``order``, or a 422 naming every broken rule."""
        return checked_order(
            order, self._registry(), self._rules, self._today(), field_prefix=field_prefix
        )

    def place(
        self, principal: Principal, account_id: str, key: str, order: PlaceOrderRequest
    ) -> Answer:
        """Place one order at most once (see the module docstring)."""
        params = self.validate_order(order)
        return self._place(principal, account_id, key, order, params, item=0)

    def _place(
        self,
        principal: Principal,
        account_id: str,
        key: str,
        order: PlaceOrderRequest,
        params: dict[str, Any],
        *,
        item: int,
    ) -> Answer:
        tag = kite_tag(principal.user_id, key, item)
        intent = Intent(
            user_id=principal.user_id,
            account_id=account_id,
            idempotency_key=key,
            operation="place",
            item=item,
            kite_tag=tag,
            request=order.model_dump(exclude_none=True),
        )
        record, new = self._lifecycle.record_intent(intent)
        if not new:
            known = self._known_outcome(account_id, record)
            if known is not None:
                return known
        self._take_slot(account_id, record)
        if not new:
            self._lifecycle.settle_intent(record.intent_id, "sent")
        try:
            order_id = _order_id(
                self._broker.call(account_id, lambda kite: kite.place_order(tag=tag, **params))
            )
        except KiteCallError as failure:
            return self._write_failed(account_id, record, failure, tag)
        self._settle_placed(record.intent_id, order_id)
        return success({"order_id": order_id, "tag": tag})

    def _settle_placed(self, intent_id: int, order_id: str) -> None:
        """Record the accepted order; if the store fails now, the order still stands.

        The intent stays ``sent``: the order's first update (it carries the
        tag) settles it, and a retry finds the order by its tag.
        """
        try:
            self._lifecycle.settle_intent(intent_id, "accepted", order_id=order_id)
        except ApiError:
            self.settle_failures += 1

    def _take_slot(self, account_id: str, record: IntentRecord) -> None:
        """A slot of the account's order rate; without one, the intent was never sent."""
        try:
            self._limiter.acquire(account_id)
        except ApiError:
            self._lifecycle.settle_intent(record.intent_id, "not_sent")
            raise

    def _known_outcome(self, account_id: str, record: IntentRecord) -> Answer | None:
        """The answer for an intent recorded before, or None if it may be sent (again)."""
        if record.status == "accepted" and record.order_id:
            return success({"order_id": record.order_id, "tag": record.kite_tag})
        if record.status == "refused":
            return {
                "status_code": KiteRejectedError.status,
                "body": KiteRejectedError(
                    record.error_message, extra={"kite_error_type": record.error_code}
                ).body(),
            }
        if record.status == "not_sent":
            return None
        # sent (a crash mid-call) or unknown: whatever happened, find it; never send it again
        found = self._find_by_tag(account_id, record.kite_tag)
        if found is not None:
            self._lifecycle.settle_intent(record.intent_id, "accepted", order_id=found)
            return success({"order_id": found, "tag": record.kite_tag})
        self._lifecycle.settle_intent(record.intent_id, "unknown")
        raise OrderOutcomeUnknownError(extra={"tag": record.kite_tag})

    def _write_failed(
        self, account_id: str, record: IntentRecord, failure: KiteCallError, tag: str | None
    ) -> Answer:
        if failure.kind in AMBIGUOUS:
            found = self._find_by_tag(account_id, tag)
            if found is not None:
                self._lifecycle.settle_intent(record.intent_id, "accepted", order_id=found)
                return success({"order_id": found, "tag": tag})
            self._lifecycle.settle_intent(record.intent_id, "unknown")
            raise OrderOutcomeUnknownError(extra={"tag": tag})
        if failure.kind in RETRYABLE:
            self._lifecycle.settle_intent(record.intent_id, "not_sent")
            raise api_error(failure) from failure
        self._lifecycle.settle_intent(
            record.intent_id,
            "refused",
            error_code=failure.error_type,
            error_message=failure.message[:500],
        )
        return failure_answer(api_error(failure))

    def _change_failed(
        self, account_id: str, record: IntentRecord, failure: KiteCallError, check: str
    ) -> Answer:
        """A change (not a placement) failed; when unconfirmed, say what to check."""
        if failure.kind in AMBIGUOUS:
            self._lifecycle.settle_intent(record.intent_id, "unknown")
            raise OrderOutcomeUnknownError(
                f"Kite did not confirm the change; {check} before retrying with a new "
                "Idempotency-Key."
            ) from failure
        return self._write_failed(account_id, record, failure, None)

    def _find_by_tag(self, account_id: str, tag: str | None) -> str | None:
        """The id of the order carrying ``tag`` in the account's book (a few tries), or None."""
        if not tag:
            return None
        for attempt in range(self._resolve.attempts):
            if attempt:
                self._sleep(self._resolve.delay_seconds * attempt)
            try:
                orders = self._broker.call(account_id, lambda kite: kite.orders())
            except KiteCallError:
                continue
            for entry in orders or ():
                tags = entry.get("tags") or []
                if entry.get("parent_order_id") is None and (
                    entry.get("tag") == tag or tag in tags
                ):
                    return str(entry["order_id"])
        return None

    def basket(
        self,
        principal: Principal,
        account_id: str,
        key: str,
        orders: Sequence[PlaceOrderRequest],
    ) -> Answer:
        """Every order checked first (422 if any is bad); then placed in order, each alone."""
        params: list[dict[str, Any]] = []
        problems: list[FieldProblem] = []
        for index, order in enumerate(orders):
            try:
                params.append(self.validate_order(order, field_prefix=f"orders.{index}."))
            except ValidationFailedError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ValidationFailedError(problems)
        results: list[dict[str, Any]] = []
        for index, (order, order_params) in enumerate(zip(orders, params, strict=True)):
            try:
                answer = self._place(principal, account_id, key, order, order_params, item=index)
            except ApiError as error:
                answer = failure_answer(error)
            body = answer["body"]
            if body.get("status") == "success":
                result = BasketItemResult(
                    index=index,
                    status="success",
                    order_id=body["data"]["order_id"],
                    tag=body["data"].get("tag"),
                )
            else:
                result = BasketItemResult(
                    index=index,
                    status="error",
                    code=body.get("code"),
                    message=body.get("message"),
                    kite_error_type=body.get("kite_error_type"),
                    tag=body.get("tag"),
                )
            results.append(result.model_dump(exclude_none=True))
        return success({"orders": results})

    def change(
        self,
        principal: Principal,
        account_id: str,
        key: str,
        operation: str,
        order_id: str,
        request: ModifyOrderRequest | ExitOrderRequest | None,
        call: Callable[[KiteApi], Any],
    ) -> Answer:
        """Modify, cancel or exit an order once per key; an ambiguous answer is checked."""
        intent = Intent(
            user_id=principal.user_id,
            account_id=account_id,
            idempotency_key=key,
            operation=operation,
            order_id=order_id,
            request=request.model_dump(exclude_none=True) if request else {},
        )
        record, new = self._lifecycle.record_intent(intent)
        if not new and record.status == "accepted":
            return success({"order_id": order_id})
        self._take_slot(account_id, record)
        try:
            answered = _order_id(self._broker.call(account_id, call))
        except KiteCallError as failure:
            return self._change_failed(account_id, record, failure, "read the order's history")
        self._lifecycle.settle_intent(record.intent_id, "accepted", order_id=answered)
        return success({"order_id": answered})

    # -- GTT --------------------------------------------------------------------------------

    def check_gtt(self, gtt: GttRequest) -> None:
        """A 422 naming every rule ``gtt`` breaks against its instrument."""
        checked_gtt(gtt, self._registry(), self._today())

    def create_gtt(
        self, principal: Principal, account_id: str, key: str, gtt: GttRequest
    ) -> Answer:
        """Create a GTT once per key (an ambiguous answer is looked for among the GTTs)."""
        self.check_gtt(gtt)
        intent = Intent(
            user_id=principal.user_id,
            account_id=account_id,
            idempotency_key=key,
            operation="gtt_create",
            request=gtt.model_dump(),
        )
        record, new = self._lifecycle.record_intent(intent)
        if not new and record.status == "accepted" and record.trigger_id is not None:
            return success({"trigger_id": record.trigger_id})
        orders = [o.model_dump() for o in gtt.orders]
        try:
            trigger_id = _trigger_id(
                self._broker.call(
                    account_id,
                    lambda kite: kite.place_gtt(
                        gtt.trigger_type,
                        gtt.tradingsymbol,
                        gtt.exchange,
                        list(gtt.trigger_values),
                        gtt.last_price,
                        orders,
                    ),
                )
            )
        except KiteCallError as failure:
            return self._change_failed(account_id, record, failure, "list the GTTs")
        self._lifecycle.settle_intent(record.intent_id, "accepted", trigger_id=trigger_id)
        return success({"trigger_id": trigger_id})
