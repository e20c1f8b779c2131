"""Grants: administrators (Cognito group ``admin``) manage who sees and trades which account."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from lambdas.api.auth import require_admin
from lambdas.api.context import AUTHENTICATED, Dependencies, documented, new_router, principal
from lambdas.api.errors import NotFoundError
from lambdas.api.models import (
    ACCOUNT_ID_PATTERN,
    USER_ID_PATTERN,
    Envelope,
    Grant,
    GrantRequest,
    Grants,
)

AccountPath = Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN, description="The Kite account")]
UserPath = Annotated[str, Path(pattern=USER_ID_PATTERN, description="The user's Cognito sub")]
ADMIN_ERRORS = (401, 403, 413, 422, 503)


def build(deps: Dependencies) -> APIGatewayRouter:
    """The grants router."""
    router = new_router()

    @router.get(
        "/me/grants",
        summary="The caller's own grants",
        tags=["grants"],
        security=AUTHENTICATED,
        responses=documented("The accounts the caller may see or trade", (401, 503)),
    )
    def my_grants() -> Envelope[Grants]:
        caller = principal(router)
        return Envelope(data=Grants(grants=deps.grants.for_user(caller.user_id)))

    @router.get(
        "/admin/grants",
        summary="Every grant (administrators)",
        tags=["grants"],
        security=AUTHENTICATED,
        responses=documented("Every grant", ADMIN_ERRORS),
    )
    def list_grants() -> Envelope[Grants]:
        require_admin(principal(router))
        return Envelope(data=Grants(grants=deps.grants.all()))

    @router.put(
        "/admin/grants/<user_id>/<account_id>",
        summary="Grant a user a role on an account (administrators)",
        tags=["grants"],
        security=AUTHENTICATED,
        responses=documented("The grant", ADMIN_ERRORS),
    )
    def put_grant(
        user_id: UserPath, account_id: AccountPath, grant: GrantRequest
    ) -> Envelope[Grant]:
        caller = principal(router)
        require_admin(caller)
        return Envelope(data=deps.grants.put(user_id, account_id, grant.role, caller.user_id))

    @router.delete(
        "/admin/grants/<user_id>/<account_id>",
        summary="Withdraw a grant (administrators)",
        tags=["grants"],
        security=AUTHENTICATED,
        responses=documented("Withdrawn", (401, 403, 404, 422, 503)),
    )
    def delete_grant(user_id: UserPath, account_id: AccountPath) -> Envelope[bool]:
        require_admin(principal(router))
        if not deps.grants.delete(user_id, account_id):
            raise NotFoundError("No such grant.")
        return Envelope(data=True)

    return router
