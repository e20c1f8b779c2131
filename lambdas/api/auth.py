"""Who is calling and what they may do (pure).

API Gateway's Cognito authorizer verifies the token (signature, issuer,
expiry) before the function runs and passes its claims in
``requestContext.authorizer.claims``; the function trusts them and only
reads them. A user is known by the token's ``sub`` (immutable, unlike the
user name). Each account-scoped route then checks the user's grant on that
account: ``view`` reads, ``trade`` also writes. Without a grant the answer
is 403 whether or not the account exists, so the API does not reveal which
accounts there are. Members of the Cognito group ``admin`` manage grants.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from lambdas.api.errors import ForbiddenError, UnauthorizedError

ADMIN_GROUP = "admin"
Role = Literal["trade", "view"]
ROLE_RANK: dict[str, int] = {"view": 1, "trade": 2}
_GROUP_SPLIT = re.compile(r"[,\s]+")


@dataclass(frozen=True)
class Principal:
    """The verified caller."""

    user_id: str
    """The Cognito ``sub``."""
    username: str
    groups: frozenset[str]

    @property
    def is_admin(self) -> bool:
        """Whether the caller manages grants."""
        return ADMIN_GROUP in self.groups


class GrantReader(Protocol):
    """The grants table, as far as checks go."""

    def role(self, user_id: str, account_id: str) -> str | None:
        """The user's role on the account, or None without a grant."""
        ...


def parse_groups(raw: Any) -> frozenset[str]:
    """``cognito:groups`` as API Gateway passes it: a list, or a string like ``[a, b]``/``a,b``."""
    if raw is None:
        return frozenset()
    if isinstance(raw, list | tuple):
        return frozenset(str(g) for g in raw if str(g))
    text = str(raw).strip().strip("[]")
    return frozenset(g for g in _GROUP_SPLIT.split(text) if g)


def principal_from_claims(claims: Mapping[str, Any] | None) -> Principal:
    """The caller from the authorizer's claims; 401 when there are none (misconfiguration)."""
    if not claims or not claims.get("sub"):
        raise UnauthorizedError()
    user_id = str(claims["sub"])
    username = str(claims.get("cognito:username") or claims.get("username") or user_id)
    return Principal(user_id, username, parse_groups(claims.get("cognito:groups")))


def require_role(principal: Principal, account_id: str, needed: Role, grants: GrantReader) -> str:
    """The caller's role on ``account_id`` if it allows ``needed``; else 403 (same for all)."""
    role = grants.role(principal.user_id, account_id)
    if role is None or ROLE_RANK.get(role, 0) < ROLE_RANK[needed]:
        raise ForbiddenError()
    return role


def require_admin(principal: Principal) -> None:
    """403 unless the caller is in the ``admin`` group."""
    if not principal.is_admin:
        raise ForbiddenError("Only administrators manage grants.")
