"""The instruments function's pure logic: which session downloads, which dumps are refused."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta

import pytest

from lambdas.instruments.logic import (
    SessionUnavailableError,
    SnapshotRejectedError,
    choose_session,
    ist_date,
    validate,
)
from tests.factories import chain
from ticker_adapters.credentials import KiteSession
from ticker_adapters.instrument_snapshots import SnapshotCorruptError, SnapshotPointer
from ticker_core.instruments import write_instruments_csv

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def session(expires_in_hours: float) -> KiteSession:
    issued = NOW - timedelta(hours=1)
    return KiteSession("key", secrets.token_hex(8), "AB1234", issued,
                       NOW + timedelta(hours=expires_in_hours))  # fmt: skip


class Vault:
    def __init__(self, sessions: dict[str, KiteSession]) -> None:
        self.sessions = sessions
        self.refreshed: list[str] = []

    def accounts(self) -> list[str]:
        return sorted(self.sessions)

    def session(self, account_id: str, *, force_refresh: bool = False) -> KiteSession:
        if force_refresh:
            self.refreshed.append(account_id)
        return self.sessions[account_id]


def test_the_named_account_or_else_the_first_live_session_downloads() -> None:
    vault = Vault({"a": session(-1), "b": session(5), "c": session(5)})
    assert choose_session(vault, None, NOW) is vault.sessions["b"]
    assert choose_session(vault, "c", NOW) is vault.sessions["c"]
    # the vault is asked past its cache: a token stored by a login a moment ago counts
    assert vault.refreshed == ["a", "b", "c"]
    with pytest.raises(SessionUnavailableError, match="for a: log in"):
        choose_session(vault, "a", NOW)
    with pytest.raises(SessionUnavailableError, match="any account"):
        choose_session(Vault({}), None, NOW)


def dump(strikes: int) -> bytes:
    levels = [24000.0 + 50 * i for i in range(strikes)]
    return write_instruments_csv(
        chain("NIFTY", date(2026, 12, 29), levels, first_exchange_token=5000, future=True)
    ).encode()


def test_a_truncated_unreadable_or_shrunken_dump_is_refused_with_reasons() -> None:
    good = validate(dump(10), None, 0.2)
    baseline = good.summary()
    cases = {
        dump(10)[:-30]: "last row is truncated",
        b"\xff" + dump(10): "not UTF-8",
        b"token,name\n1,x\n": "malformed dump",
        dump(5): "segment NFO-OPT: 10 instruments, baseline 20",
    }
    for data, reason in cases.items():
        with pytest.raises(SnapshotRejectedError) as refused:
            validate(data, baseline, 0.2)
        assert any(reason in r for r in refused.value.reasons), refused.value.reasons
    # A small drop is normal (expiries roll off): it passes
    assert validate(dump(9), baseline, 0.2).summary().instruments == 19


def test_the_snapshot_day_is_the_ist_date() -> None:
    assert ist_date(datetime(2026, 11, 26, 18, 31, tzinfo=UTC)) == date(2026, 11, 27)
    assert ist_date(datetime(2026, 11, 26, 18, 29, tzinfo=UTC)) == date(2026, 11, 26)


def test_a_pointer_round_trips_and_a_bad_one_is_refused() -> None:
    summary = validate(dump(2), None, 0.2).summary()
    pointer = SnapshotPointer(date(2026, 11, 27), "a" * 64, "instruments/k", NOW, summary)
    assert SnapshotPointer.from_json(pointer.to_json()) == pointer
    good = pointer.to_json().decode()
    for bad in (
        "[]",
        good.replace('"format": 1', '"format": 2'),
        good.replace("a" * 64, "A" * 64),
        good.replace("+00:00", ""),
        good.replace('"date": "2026-11-27"', '"date": "20261127"'),
        "{",
    ):
        with pytest.raises(SnapshotCorruptError):
            SnapshotPointer.from_json(bad.encode())
