"""The trading API in the sandbox: users, the function behind the local gateway, and traffic.

:func:`start_api` creates the Cognito users (an administrator and a trader),
starts the API function's execution environments and the local API Gateway
in front of them, grants the trader every simulated account through the
API's own admin route (with the administrator's token), and writes
``<run-dir>/endpoints.json`` for scripts. :class:`OrderDriver` places orders
through the gateway while the run lasts - marketable ones that fill, a
resting one it then cancels, one Kite rejects, and a burst of 20 identical
requests (one Idempotency-Key, header names in mixed case) that must place
one order - and :func:`order_facts` counts what happened, for the report.

moto's Cognito signs its tokens with a key shipped in moto's source (anyone
can mint a token it accepts): these users exist for the sandbox only.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.api_gateway import (
    ApiGatewayServer,
    CognitoAuthorizer,
    Invoke,
    LocalApiGateway,
    routes_from_openapi,
)
from sandbox.moto_server import AwsEndpoint
from sandbox.provision import PoolUser, UserPool, create_user, create_user_pool

OPENAPI = Path(__file__).resolve().parent.parent / "openapi.json"
BURST = 20
HTTP_TIMEOUT_S = 30.0


@dataclass
class ApiSandbox:
    """The running API: where it is and who may call it."""

    server: ApiGatewayServer
    pool: UserPool
    admin: PoolUser
    trader: PoolUser
    accounts: list[str]

    @property
    def url(self) -> str:
        """The API's base URL."""
        return self.server.url

    def endpoints(self, run_dir: Path) -> dict[str, Any]:
        """What ``endpoints.json`` says."""
        return {
            "api_url": self.url,
            "openapi": str(OPENAPI),
            "region": self.pool.region,
            "user_pool_id": self.pool.pool_id,
            "client_id": self.pool.client_id,
            "issuer": self.pool.issuer,
            "note": "sandbox only: moto signs these tokens with a key anyone can read",
            "users": [
                {
                    "username": user.username,
                    "sub": user.sub,
                    "groups": list(user.groups),
                    "id_token": user.id_token,
                    "accounts": dict.fromkeys(self.accounts, "trade")
                    if user is self.trader
                    else {},
                }
                for user in (self.admin, self.trader)
            ],
            "accounts": self.accounts,
            "examples": {
                "option_chain": {
                    "method": "GET",
                    "url": self.url + option_chain_path("NIFTY"),
                    "description": "NIFTY's nearest expiry: every strike's CE and PE with last "
                    "price, OI, IV and Greeks on one forward (any signed-in user)",
                },
            },
            "run_dir": str(run_dir),
        }

    def option_chain_curl(self, endpoints_path: Path, underlying: str) -> str:
        """A ready-to-paste command reading an option chain as the trader."""
        return (
            f'curl -sS "{self.url}{option_chain_path(underlying)}" '
            f'-H "Authorization: {_trader_token(endpoints_path)}"'
        )

    def curl(self, endpoints_path: Path, account: str, symbol: str) -> str:
        """A ready-to-paste command placing a paper order as the trader."""
        token = _trader_token(endpoints_path)
        body = json.dumps(
            {
                "exchange": "NSE",
                "tradingsymbol": symbol,
                "transaction_type": "BUY",
                "quantity": 1,
                "product": "MIS",
                "order_type": "MARKET",
                "market_protection": -1,
            }
        )
        return (
            f'curl -sS -X POST {self.url}/accounts/{account}/orders -H "Authorization: {token}" '
            f"-H \"Idempotency-Key: $(python3 -c 'import uuid; print(uuid.uuid4())')\" "
            f"-H 'Content-Type: application/json' -d '{body}'"
        )


def _trader_token(endpoints_path: Path) -> str:
    """Shell that reads the trader's ID token from ``endpoints.json``."""
    return (
        "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))"
        f'["users"][1]["id_token"])\' {endpoints_path})'
    )


def option_chain_path(underlying: str) -> str:
    """The option chain of ``underlying``'s nearest expiry."""
    return f"/market/option-chain/{underlying}"


def api_call(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One call to the local gateway: status, JSON body, headers."""
    data = json.dumps(body).encode() if body is not None else None
    all_headers = dict(headers or {})
    if data is not None:
        all_headers["Content-Type"] = "application/json"
    if token:
        all_headers["Authorization"] = token
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310 # nosec B310 # loopback
            raw, status, answer_headers = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        raw, status, answer_headers = exc.read(), exc.code, dict(exc.headers)
    return status, (json.loads(raw) if raw else {}), answer_headers


def warm(url: str, environments: int) -> None:
    """``environments`` concurrent health checks: that many execution environments initialised.

    The sandbox's stand-in for provisioned concurrency: on two busy cores a cold
    start takes seconds, and a burst arriving at cold environments would mostly
    measure imports.
    """
    failures: list[int] = []

    def one() -> None:
        status, _, _ = api_call("GET", f"{url}/health")
        if status != 200:
            failures.append(status)

    threads = [threading.Thread(target=one) for _ in range(environments)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if failures:
        raise RuntimeError(f"the API function did not start: HTTP {failures[0]}")


def start_api(
    *,
    aws: AwsEndpoint,
    invoke: Invoke | Mapping[str, Invoke],
    port: int,
    accounts: list[str],
    pool_name: str,
    environments: int = 1,
) -> ApiSandbox:
    """Users, the gateway in front of ``invoke`` (per function name, or the API's alone), and
    the trader's grants (see the module)."""
    pool = create_user_pool(aws, pool_name)
    admin = create_user(aws, pool, "sandbox-admin", groups=("admin",))
    trader = create_user(aws, pool, "sandbox-trader")
    gateway = LocalApiGateway(
        routes_from_openapi(json.loads(OPENAPI.read_text())),
        CognitoAuthorizer(pool.jwks_url, pool.issuer, frozenset({pool.client_id})),
        invoke,
    )
    server = ApiGatewayServer(gateway, port).start()
    api = ApiSandbox(server, pool, admin, trader, accounts)
    try:
        warm(api.url, environments)
        for account in accounts:
            status, body, _ = api_call(
                "PUT",
                f"{api.url}/admin/grants/{trader.sub}/{account}",
                token=admin.id_token,
                body={"role": "trade"},
            )
            if status != 200:
                raise RuntimeError(f"granting {account}: HTTP {status} {body.get('code')}")
    except Exception:
        server.stop()
        raise
    return api


@dataclass
class DriverCounts:
    """What the driver saw, by outcome."""

    answers: Counter[str] = field(default_factory=Counter)
    order_ids: set[str] = field(default_factory=set)
    burst_order_ids: list[set[str]] = field(default_factory=list)
    burst_statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


class OrderDriver:
    """Places orders through the API while the run lasts (a background thread)."""

    def __init__(self, api: ApiSandbox, symbols: list[str], interval_s: float = 3.0) -> None:
        self._api = api
        self._symbols = symbols
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts = DriverCounts()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Begin placing orders."""
        self._thread = threading.Thread(target=self._run, name="order-driver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current step."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _place(
        self, account: str, order: dict[str, Any], key: str, header: str = "Idempotency-Key"
    ) -> tuple[int, dict[str, Any]]:
        status, body, headers = api_call(
            "POST",
            f"{self._api.url}/accounts/{account}/orders",
            token=self._api.trader.id_token,
            body=order,
            headers={header: key},
        )
        with self._lock:
            replayed = headers.get("Idempotent-Replayed") == "true"
            label = f"{status} {body.get('code', 'replayed' if replayed else 'placed')}"
            self.counts.answers[label] += 1
            if status == 200 and not replayed:
                self.counts.order_ids.add(body["data"]["order_id"])
        return status, body

    def burst(self, account: str, order: dict[str, Any]) -> None:
        """``BURST`` identical requests at once (one key, mixed header case): one order."""
        key = f"burst-{uuid.uuid4()}"
        names = ["Idempotency-Key", "idempotency-key", "IDEMPOTENCY-KEY", "Idempotency-key"]
        ids: set[str] = set()
        lock = threading.Lock()
        start = threading.Barrier(BURST)

        def one(i: int) -> None:
            start.wait(10)
            try:
                status, body = self._place(account, order, key, names[i % len(names)])
            except OSError as exc:  # counted: the report shows it
                with self._lock:
                    self.counts.errors.append(type(exc).__name__)
                return
            with lock:
                self.counts.burst_statuses[status] += 1
                if status == 200:
                    ids.add(body["data"]["order_id"])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(BURST)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # The key again, after the burst: the first answer, replayed.
        status, body = self._place(account, order, key)
        if status == 200:
            ids.add(body["data"]["order_id"])
        self.counts.burst_order_ids.append(ids)

    def _run(self) -> None:
        step = 0
        accounts = self._api.accounts
        try:
            while not self._stop.is_set():
                account = accounts[step % len(accounts)]
                symbol = self._symbols[step % len(self._symbols)]
                market = {
                    "exchange": "NSE", "tradingsymbol": symbol, "transaction_type": "BUY",
                    "quantity": 1, "product": "MIS", "order_type": "MARKET",
                    "market_protection": -1,
                }  # fmt: skip
                if step == 1:
                    self.burst(account, market)
                elif step % 4 == 3:
                    # CNC sell without holdings: Kite accepts it and then rejects it
                    unheld = {**market, "transaction_type": "SELL", "product": "CNC",
                              "quantity": 100_000}  # fmt: skip
                    self._place(account, unheld, f"reject-{uuid.uuid4()}")
                else:
                    self._place(account, market, f"order-{uuid.uuid4()}")
                step += 1
                self._stop.wait(self._interval)
        except Exception as exc:  # counted, and the run goes on: the report says what happened
            with self._lock:
                self.counts.errors.append(type(exc).__name__)


def order_facts(
    driver: OrderDriver | None, rows: dict[str, int], gateway: LocalApiGateway | None
) -> dict[str, Any]:
    """The report's trading facts: what the API answered and what PostgreSQL holds."""
    counts = driver.counts if driver else DriverCounts()
    duplicates = sum(max(0, len(ids) - 1) for ids in counts.burst_order_ids)
    return {
        "orders_placed": len(counts.order_ids),
        "answers": dict(counts.answers),
        "burst_requests": sum(counts.burst_statuses.values()),
        "burst_statuses": {str(k): v for k, v in counts.burst_statuses.items()},
        "burst_orders": [len(ids) for ids in counts.burst_order_ids],
        "duplicate_orders": duplicates,
        "driver_errors": counts.errors,
        **rows,
        "api_calls": (
            {f"{m} {r} {s}": n for (m, r, s), n in sorted(gateway.statuses.items())}
            if gateway
            else {}
        ),
    }


def market_facts(api: ApiSandbox | None, underlying: str = "NIFTY") -> dict[str, Any]:
    """One option chain read through the API at the end of the run, summarised for the report."""
    if api is None:
        return {}
    status, body, _ = api_call(
        "GET", api.url + option_chain_path(underlying), token=api.trader.id_token
    )
    if status != 200:
        return {"option_chain_status": status, "option_chain_code": body.get("code")}
    chain = body["data"]
    options = [s[side] for s in chain["strikes"] for side in ("ce", "pe") if s[side]]
    return {
        "option_chain_status": status,
        "underlying": chain["underlying"],
        "expiry": chain["expiry"],
        "strikes": len(chain["strikes"]),
        "options_priced": sum(1 for o in options if o["last_price"] is not None),
        "options_with_iv": sum(1 for o in options if o["greeks"]["iv"] is not None),
        "forward": chain["forward"]["value"],
        "forward_source": chain["forward"]["source"],
        "atm_strike": chain["atm_strike"],
    }


TRADING_COUNTS_SQL = {
    "intents": "select count(*) from trading.order_intents",
    "intents_accepted": "select count(*) from trading.order_intents where status = 'accepted'",
    "orders_filled": "select count(*) from trading.orders where status = 'COMPLETE'",
    "orders_rejected": "select count(*) from trading.orders where status = 'REJECTED'",
    "order_updates_stored": "select count(*) from trading.order_updates",
    # Stored once, by whichever path brought the update first.
    "order_updates_by_postback": (
        "select count(*) from trading.order_updates where source = 'postback'"
    ),
    "order_updates_by_websocket": (
        "select count(*) from trading.order_updates where source = 'websocket'"
    ),
    "order_updates_unpublished": (
        "select count(*) from trading.order_updates where published_at is null"
    ),
}


async def trading_rows(conn: Any) -> dict[str, int]:
    """Counts from the ``trading`` schema."""
    return {name: int(await conn.fetchval(sql)) for name, sql in TRADING_COUNTS_SQL.items()}
