"""Publish the day's instruments snapshot: download, validate, store, point.

Order of publication, each step idempotent so a re-run after any failure
converges:

1. download the dump through the account's REST session;
2. validate it: ``parse_instruments`` (a malformed dump raises) and
   ``DumpSummary.shortfalls`` against the current pointer's summary (the last
   good dump, normally yesterday's): a truncated or shrunken dump is refused;
3. write the snapshot object ``<prefix>/<IST date>/<sha256>.csv.gz``
   (content-addressed: the same dump always lands on the same key);
4. publish the registry to PostgreSQL in one transaction (same day and SHA:
   nothing to do; same day, new SHA: that day's rows are replaced);
5. write the pointer ``<prefix>/current.json`` last.

A refused or failed download raises before step 3, so the pointer and the
database keep the last good snapshot and readers carry on with it. When the
dump is the one already current, nothing is rewritten and the outcome is
``unchanged`` (step 4 still runs, to repair a run that died before it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ticker_adapters.credentials import CredentialError, KiteSession
from ticker_adapters.instrument_snapshots import (
    SnapshotPointer,
    csv_digest,
    snapshot_key,
)
from ticker_core.instruments import (
    DumpSummary,
    Instrument,
    InstrumentsError,
    ParseResult,
    parse_instruments,
)
from ticker_core.tz import ist_date


class SnapshotRejectedError(Exception):
    """The downloaded dump is not fit to publish; ``reasons`` say why (stable, for logs)."""

    def __init__(self, reasons: Sequence[str], summary: DumpSummary | None = None) -> None:
        super().__init__("instruments dump refused: " + "; ".join(reasons))
        self.reasons = tuple(reasons)
        self.summary = summary


class SessionUnavailableError(Exception):
    """No account has a live Kite session to download with (log in first).

    ``reasons`` say, account by account, why its session could not be used.
    """

    def __init__(self, message: str, reasons: Sequence[str] = ()) -> None:
        super().__init__(message if not reasons else f"{message} ({'; '.join(reasons)})")
        self.reasons = tuple(reasons)


class SnapshotStore(Protocol):
    """The S3 side (the dal's store, or a fake)."""

    def current(self) -> SnapshotPointer | None:
        """The pointer as it is now (None before the first publication)."""
        ...

    def put_snapshot(self, key: str, csv_bytes: bytes) -> None:
        """Write the snapshot object (compressed) at ``key``."""
        ...

    def put_pointer(self, pointer: SnapshotPointer) -> None:
        """Write the pointer (the last step)."""
        ...


class RegistryDatabase(Protocol):
    """The PostgreSQL side (the dal's writer, or a fake)."""

    async def publish(
        self, pointer: SnapshotPointer, instruments: Sequence[Instrument], keep_days: int
    ) -> bool:
        """Store the snapshot atomically; True if rows changed."""
        ...


class SessionSource(Protocol):
    """The credential vault, as far as choosing a session goes."""

    def accounts(self) -> list[str]:
        """Accounts with API credentials, sorted."""
        ...

    def session(self, account_id: str, *, force_refresh: bool = False) -> KiteSession:
        """The account's current session."""
        ...


@dataclass(frozen=True)
class PublishSettings:
    """How strict validation is and how long the database keeps old days."""

    max_drop: float = 0.2
    keep_days: int = 7


@dataclass(frozen=True)
class PublishOutcome:
    """What a run did."""

    status: str
    """``published`` (a new pointer) or ``unchanged`` (the current dump again)."""
    pointer: SnapshotPointer
    database_changed: bool
    rejected_rows: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the invocation's result and logs."""
        return {
            "status": self.status,
            "date": self.pointer.day.isoformat(),
            "sha256": self.pointer.sha256,
            "key": self.pointer.key,
            "instruments": self.pointer.summary.instruments,
            "rejected_rows": self.rejected_rows,
            "database_changed": self.database_changed,
        }


def choose_session(vault: SessionSource, account_id: str | None, now: datetime) -> KiteSession:
    """The session to download with: the given account's, else the first live one.

    An account whose session is missing, unreadable or expired is passed
    over for the next one, since one account not logged in today must not
    stop the day's snapshot. Raises :class:`SessionUnavailableError`, with
    each account's reason, when no candidate has a live session (Kite would
    answer ``TokenException``). Errors reaching the vault at all (Secrets
    Manager or KMS unavailable) propagate: they are not about one account.
    """
    candidates = [account_id] if account_id else vault.accounts()
    reasons = []
    for account in candidates:
        try:
            session = vault.session(account, force_refresh=True)
        except CredentialError as exc:
            reasons.append(f"{account}: {type(exc).__name__}")
            continue
        if not session.is_expired(now):
            return session
        reasons.append(f"{account}: session expired at {session.expires_at.isoformat()}")
    named = account_id or "any account"
    raise SessionUnavailableError(f"no live Kite session for {named}: log in first", reasons)


def validate(csv_bytes: bytes, baseline: DumpSummary | None, max_drop: float) -> ParseResult:
    """The parsed dump, or :class:`SnapshotRejectedError` naming every shortfall."""
    try:
        parsed = parse_instruments(csv_bytes.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SnapshotRejectedError([f"not UTF-8 at byte {exc.start}"]) from exc
    except InstrumentsError as exc:
        raise SnapshotRejectedError([f"malformed dump: {exc}"]) from exc
    summary = parsed.summary()
    reasons = summary.shortfalls(baseline, max_drop=max_drop)
    if reasons:
        raise SnapshotRejectedError(reasons, summary)
    return parsed


async def publish_instruments(
    download: Callable[[], bytes],
    *,
    store: SnapshotStore,
    database: RegistryDatabase,
    now: datetime,
    prefix: str,
    settings: PublishSettings,
) -> PublishOutcome:
    """Download, validate and publish today's snapshot (see the module docstring)."""
    current = store.current()
    csv_bytes = download()
    parsed = validate(csv_bytes, current.summary if current else None, settings.max_drop)
    day = ist_date(now)
    sha = csv_digest(csv_bytes)
    unchanged = current is not None and current.day == day and current.sha256 == sha
    if current is not None and unchanged:
        pointer = current
    else:
        pointer = SnapshotPointer(day, sha, snapshot_key(day, sha, prefix), now, parsed.summary())
        store.put_snapshot(pointer.key, csv_bytes)
    changed = await database.publish(pointer, parsed.instruments, settings.keep_days)
    if not unchanged:
        store.put_pointer(pointer)
    return PublishOutcome(
        status="unchanged" if unchanged else "published",
        pointer=pointer,
        database_changed=changed,
        rejected_rows=len(parsed.problems),
    )
