"""Accounts (administrators) and the daily Kite login (the redirect and Kite's callback)."""

from __future__ import annotations

import html
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from lambdas.api.account_models import Account, Accounts, LoginLink, RegisterAccountRequest
from lambdas.api.accounts import Accounts as AccountsLogic
from lambdas.api.auth import require_admin
from lambdas.api.context import AUTHENTICATED, Dependencies, documented, new_router, principal
from lambdas.api.errors import ApiError, LoginRefusedError, ServiceUnavailableError
from lambdas.api.models import ACCOUNT_ID_PATTERN, Envelope
from ticker_core.tz import IST

AccountPath = Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN, description="The Kite account")]
ADMIN_ERRORS = (401, 403, 413, 422, 503)
ONE_ACCOUNT_ERRORS = (401, 403, 404, 422, 503)
HTML = "text/html; charset=utf-8"
PAGE_HEADERS = {
    # The callback's URL carries the request token: no page it shows may leak it onward.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}
CALLBACK_ANSWERS: dict[int, Any] = {
    200: {"description": "Logged in: a page saying until when", "content": {HTML: {}}},
    400: {
        "description": "Refused, nothing stored: the state is invalid or expired, Kite did not "
        "complete the login, refused the request token (also one issued to another app), or "
        "logged in another user",
        "content": {HTML: {}},
    },
    409: {
        "description": "Refused, nothing stored: the state was already used, or the account "
        "changed since the login started",
        "content": {HTML: {}},
    },
    503: {"description": "Kite or a store is unavailable; nothing stored", "content": {HTML: {}}},
}


def _page(status: int, title: str, text: str, code: str | None = None) -> Response[str]:
    code_line = f"<p><code>{html.escape(code)}</code></p>" if code else ""
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{code_line}</body></html>"
    )
    return Response(status_code=status, content_type=HTML, body=body, headers=PAGE_HEADERS)


def _logic(deps: Dependencies) -> AccountsLogic:
    if deps.accounts is None:
        raise ServiceUnavailableError()
    return deps.accounts


def build(deps: Dependencies) -> APIGatewayRouter:
    """The accounts router."""
    router = new_router()

    @router.get(
        "/admin/accounts",
        summary="Every account with its Kite session and streaming state (administrators)",
        tags=["accounts"],
        security=AUTHENTICATED,
        responses=documented("Every registered account, active and retired", ADMIN_ERRORS),
    )
    def list_accounts() -> Envelope[Accounts]:
        require_admin(principal(router))
        return Envelope(data=Accounts(accounts=_logic(deps).accounts()))

    @router.get(
        "/admin/accounts/<account_id>",
        summary="One account (administrators)",
        tags=["accounts"],
        security=AUTHENTICATED,
        responses=documented("The account", ONE_ACCOUNT_ERRORS),
    )
    def get_account(account_id: AccountPath) -> Envelope[Account]:
        require_admin(principal(router))
        return Envelope(data=_logic(deps).get(account_id))

    @router.put(
        "/admin/accounts/<account_id>",
        summary="Register an account, or replace its API key and secret (administrators)",
        description="The secret goes to the credential vault, encrypted; it is never returned "
        "or logged. A retired account registered again is active again. Log it in to Kite next.",
        tags=["accounts"],
        security=AUTHENTICATED,
        responses=documented("The account", ADMIN_ERRORS),
    )
    def register_account(
        account_id: AccountPath, registration: RegisterAccountRequest
    ) -> Envelope[Account]:
        caller = principal(router)
        require_admin(caller)
        account = _logic(deps).register(
            caller,
            account_id,
            registration.api_key,
            registration.api_secret.get_secret_value(),
        )
        return Envelope(data=account)

    @router.delete(
        "/admin/accounts/<account_id>",
        summary="Retire an account: its secrets are deleted and the feed stops using it "
        "(administrators)",
        tags=["accounts"],
        security=AUTHENTICATED,
        responses=documented("The account, retired", ONE_ACCOUNT_ERRORS),
    )
    def retire_account(account_id: AccountPath) -> Envelope[Account]:
        caller = principal(router)
        require_admin(caller)
        return Envelope(data=_logic(deps).retire(caller, account_id))

    @router.get(
        "/accounts/<account_id>/kite/login",
        summary="Start the daily Kite login: a redirect to Kite's login page",
        description="Answers 302 with Kite's login URL in Location (and in the body): a "
        "single-use link, bound to the account and the caller, valid for a few minutes. "
        "Administrators, and users who trade the account, may start it.",
        tags=["accounts"],
        security=AUTHENTICATED,
        responses={
            302: {
                "description": "To Kite's login page (Location)",
                "content": {"application/json": {"model": Envelope[LoginLink]}},
            },
            **{
                status: answer
                for status, answer in documented("", (401, 403, 404, 409, 422, 503)).items()
                if status != 200
            },
        },
    )
    def kite_login(account_id: AccountPath) -> Response[Envelope[LoginLink]]:
        link = _logic(deps).login_link(principal(router), account_id)
        return Response(
            status_code=302,
            content_type=content_types.APPLICATION_JSON,
            body=Envelope(data=link),
            headers={"Location": link.login_url, "Cache-Control": "no-store"},
        )

    @router.get(
        "/kite/login/callback",
        summary="Kite's login redirect (the app's redirect URL): completes the login",
        description="Public: Kite sends the browser here. The state must verify (signed by "
        "this API, unexpired, unused) and Kite must exchange the request token for the "
        "account's own user; otherwise nothing is stored and a page says why.",
        tags=["accounts"],
        responses=CALLBACK_ANSWERS,
    )
    def kite_callback(
        state: Annotated[str | None, Query(max_length=1024)] = None,
        status: Annotated[str | None, Query(max_length=32)] = None,
        request_token: Annotated[str | None, Query(max_length=128)] = None,
    ) -> Response[str]:
        try:
            done = _logic(deps).complete_login(
                state=state, status=status, request_token=request_token
            )
        except LoginRefusedError as exc:
            return _page(exc.status, "Kite login refused", exc.message, exc.code)
        except ApiError as exc:  # Kite or a store unavailable: nothing stored
            return _page(exc.status, "Kite login failed", exc.message, exc.code)
        until = done.expires_at.astimezone(IST).strftime("%Y-%m-%d %H:%M IST")
        return _page(
            200,
            "Kite login complete",
            f"Account {done.account_id} is logged in to Kite until {until}. "
            "You can close this page.",
        )

    return router
