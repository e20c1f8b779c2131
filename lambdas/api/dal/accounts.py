"""The account registry in DynamoDB: which Kite accounts the service uses, and their logins.

Secrets never live here (they are in the credential vault); this table holds
what operations need to see at a glance and what is safe to show: the
account's public API key, its state (``active`` or ``retired``), who
registered or retired it and when, and a mirror of its Kite session's
public facts (last login, by whom, when it expires, since when a login is
required). It also holds the single-use markers of login states: a state's
nonce is claimed with a conditional write when the callback consumes it, so
a replayed state is refused; the marker expires by TTL after the state would
have.

Layout (partition key ``pk``, sort key ``sk``, both strings; TTL attribute
``expires_at``): ``ACCOUNT / <account_id>`` and ``LOGIN_STATE / <nonce>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from ticker_adapters.aws import CONDITION_FAILED, create_table, error_code

TTL_ATTRIBUTE = "expires_at"
ACCOUNT = "ACCOUNT"
LOGIN_STATE = "LOGIN_STATE"
ACTIVE = "active"
RETIRED = "retired"


@dataclass(frozen=True)
class AccountRecord:
    """One account as registered (no secrets)."""

    account_id: str
    api_key: str
    state: str
    registered_at: datetime
    registered_by: str
    retired_at: datetime | None = None
    retired_by: str | None = None
    last_login_at: datetime | None = None
    last_login_by: str | None = None
    session_expires_at: datetime | None = None
    login_required_since: datetime | None = None

    @property
    def active(self) -> bool:
        """Whether the service uses the account."""
        return self.state == ACTIVE


def _time(item: dict[str, Any], name: str) -> datetime | None:
    value = item.get(name)
    return datetime.fromisoformat(value["S"]) if value else None


def _text(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value else None


def _record(item: dict[str, Any]) -> AccountRecord:
    registered_at = _time(item, "registered_at")
    if registered_at is None:
        raise ValueError("account item without registered_at")
    return AccountRecord(
        account_id=item["sk"]["S"],
        api_key=item["api_key"]["S"],
        state=item["state"]["S"],
        registered_at=registered_at,
        registered_by=item["registered_by"]["S"],
        retired_at=_time(item, "retired_at"),
        retired_by=_text(item, "retired_by"),
        last_login_at=_time(item, "last_login_at"),
        last_login_by=_text(item, "last_login_by"),
        session_expires_at=_time(item, "session_expires_at"),
        login_required_since=_time(item, "login_required_since"),
    )


def _key(kind: str, name: str) -> dict[str, Any]:
    return {"pk": {"S": kind}, "sk": {"S": name}}


class DynamoAccountRegistry:
    """Accounts and login-state markers in one table."""

    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    def create_table(self) -> None:
        """Create the table with its TTL (tests and the sandbox; CDK owns it in AWS)."""
        create_table(self._db, self._table, sort_key="sk", ttl_attribute=TTL_ATTRIBUTE)

    # -- accounts -------------------------------------------------------------------------

    def get(self, account_id: str) -> AccountRecord | None:
        """The account, or None if it was never registered."""
        item = self._db.get_item(
            TableName=self._table, Key=_key(ACCOUNT, account_id), ConsistentRead=True
        ).get("Item")
        return _record(item) if item else None

    def all(self) -> list[AccountRecord]:
        """Every account (active and retired), by id."""
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": ACCOUNT}},
            ConsistentRead=True,
        )
        return [_record(item) for page in pages for item in page["Items"]]

    def register(self, account_id: str, api_key: str, by: str, at: datetime) -> AccountRecord:
        """Register (or re-register) an account as active; its login history is kept.

        A new API key clears the session mirror: a session belongs to one app.
        """
        current = self.get(account_id)
        same_key = current is not None and current.api_key == api_key
        names = {"#state": "state"}
        values: dict[str, Any] = {
            ":key": {"S": api_key},
            ":active": {"S": ACTIVE},
            ":at": {"S": at.isoformat()},
            ":by": {"S": by},
        }
        update = (
            "SET api_key = :key, #state = :active, registered_at = :at, registered_by = :by "
            "REMOVE retired_at, retired_by"
        )
        if not same_key:
            update += ", session_expires_at, last_login_at, last_login_by, login_required_since"
        response = self._db.update_item(
            TableName=self._table,
            Key=_key(ACCOUNT, account_id),
            UpdateExpression=update,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return _record(response["Attributes"])

    def _update(
        self,
        account_id: str,
        expression: str,
        values: dict[str, Any],
        condition: str,
    ) -> AccountRecord | None:
        """One conditional update of an account; None when the condition does not hold."""
        try:
            response = self._db.update_item(
                TableName=self._table,
                Key=_key(ACCOUNT, account_id),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == CONDITION_FAILED:
                return None
            raise
        return _record(response["Attributes"])

    def retire(self, account_id: str, by: str, at: datetime) -> AccountRecord | None:
        """Mark a registered account retired (its session mirror cleared); None if unknown."""
        return self._update(
            account_id,
            "SET #state = :retired, retired_at = :at, retired_by = :by "
            "REMOVE session_expires_at, login_required_since",
            {":retired": {"S": RETIRED}, ":at": {"S": at.isoformat()}, ":by": {"S": by}},
            "attribute_exists(pk)",
        )

    def record_login(
        self, account_id: str, by: str, at: datetime, expires_at: datetime
    ) -> AccountRecord | None:
        """Mirror a new session's public facts; None if the account is not active any more."""
        return self._update(
            account_id,
            "SET last_login_at = :at, last_login_by = :by, session_expires_at = :exp "
            "REMOVE login_required_since",
            {
                ":at": {"S": at.isoformat()},
                ":by": {"S": by},
                ":exp": {"S": expires_at.isoformat()},
                ":active": {"S": ACTIVE},
            },
            "#state = :active",
        )

    def mark_login_required(self, account_id: str, since: datetime) -> None:
        """Note that the account needs a login (kept if already noted: the first time counts)."""
        self._update(
            account_id,
            "SET login_required_since = if_not_exists(login_required_since, :t)",
            {":t": {"S": since.isoformat()}, ":active": {"S": ACTIVE}},
            "#state = :active",
        )

    # -- login states -----------------------------------------------------------------------

    def claim_state(self, nonce: str, expires_at: datetime) -> bool:
        """Mark a login state used; False when it already was (a replay)."""
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    **_key(LOGIN_STATE, nonce),
                    TTL_ATTRIBUTE: {"N": str(int(expires_at.timestamp()) + 3600)},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if error_code(exc) == CONDITION_FAILED:
                return False
            raise
        return True
