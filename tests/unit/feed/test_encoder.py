"""The columnar encoder writes exactly what ``encode_tick`` writes, and it is schema-valid.

Every test runs twice: with the C row formatter (``feed_container._recordfmt``)
and with the pure-Python ``%`` path the feed falls back to without it.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from feed_container import encoder as encoder_module
from feed_container.encoder import UNKNOWN_UNDERLYING, ColumnarTickEncoder
from ticker_core.instruments import Instrument, InstrumentRegistry, InstrumentType
from ticker_core.kite_wire import PacketKind, decode_frame, encode_columns, join_frames, parse_ticks
from ticker_core.kite_wire._layout import DIVISOR_BY_SEGMENT
from ticker_core.records import encode_tick

RECEIVED = datetime(2026, 11, 27, 3, 45, 3, 123456, tzinfo=UTC)
SCHEMA = Draft202012Validator(
    json.loads(resources.files("ticker_core.schemas").joinpath("tick.v1.json").read_text()),
    format_checker=FormatChecker(),
)


@pytest.fixture(autouse=True, params=["c", "python"])
def formatter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the C row formatter, then with the pure-Python one."""
    if request.param == "python":
        monkeypatch.setattr(encoder_module, "_format_rows", None)
    elif encoder_module._format_rows is None:
        pytest.fail(
            "feed_container._recordfmt is not built (see tests/unit/feed/test_recordfmt.py)"
        )
    return str(request.param)


def columns(
    kind: PacketKind, tokens: np.ndarray, rng: np.random.Generator, *, signed: bool
) -> dict[str, Any]:
    n = len(tokens)
    low = -(10**6) if signed else 0
    divisor = np.array(DIVISOR_BY_SEGMENT)[np.asarray(tokens) & 0xFF]
    cols: dict[str, Any] = {"instrument_token": tokens}
    for f in kind.layout.fields[1:]:
        if f.role.name == "PRICE":
            cols[f.name] = rng.integers(low, 2**31 - 1, n) / divisor
        elif f.role.name == "TIMESTAMP":
            cols[f.name] = rng.integers(0, 2**32 - 1, n)
        else:
            cols[f.name] = rng.integers(0, 2**32 - 1 if f.role.name != "ORDERS" else 2**16, n)
    if kind.layout.has_depth:
        cols["depth_price"] = rng.integers(low, 10**9, (n, 2, 5)) / divisor[:, None, None]
        cols["depth_quantity"] = rng.integers(0, 2**32 - 1, (n, 2, 5))
        cols["depth_orders"] = rng.integers(0, 2**16, (n, 2, 5))
    return cols


def registry() -> InstrumentRegistry:
    def inst(
        token: int, symbol: str, name: str, kind: InstrumentType, segment: str, exchange: str
    ) -> Instrument:
        expiry = date(2026, 12, 29) if kind is not InstrumentType.EQ else None
        return Instrument(
            token, token >> 8, symbol, name, 0.0, expiry, 0.0, 0.05, 1, kind, segment, exchange
        )

    return InstrumentRegistry(
        [
            inst(256265, "NIFTY 50", "NIFTY 50", InstrumentType.EQ, "INDICES", "NSE"),
            inst(8960002, "NIFTY26DECFUT", "NIFTY", InstrumentType.FUT, "NFO-FUT", "NFO"),
            inst(738561, 'RELIANCE"Q\\', "RELIANCE", InstrumentType.EQ, "NSE", "NSE"),
            inst(412675, "USDINR26DECFUT", "USDINR", InstrumentType.FUT, "CDS-FUT", "CDS"),
        ]
    )


def reference(frame: bytes, reg: InstrumentRegistry | None, account: str | None) -> list[bytes]:
    out = []
    for tick in parse_ticks(frame):
        inst = reg.by_token(tick["instrument_token"]) if reg else None
        out.append(
            encode_tick(
                tick,
                underlying=inst.underlying if inst else UNKNOWN_UNDERLYING,
                received_at=RECEIVED,
                exchange=inst.exchange if inst else None,
                tradingsymbol=inst.tradingsymbol if inst else None,
                account=account,
            )
        )
    return out


def encode(frame: bytes, reg: InstrumentRegistry | None, account: str | None) -> list[bytes]:
    encoder = ColumnarTickEncoder(reg)
    suffix = encoder.suffix(RECEIVED, account)
    decoded = decode_frame(frame)
    rows = [
        (p, r)
        for b in decoded.batches
        for p, r in zip(b.positions.tolist(), encoder.encode(b, suffix), strict=True)
    ]
    return [r for _, r in sorted(rows)]


@pytest.mark.parametrize("kind", list(PacketKind))
@pytest.mark.parametrize(
    "segments", [(1, 2), (6, 12), (2, 3), (9,)], ids=["paise", "1e4", "cds", "index"]
)
@pytest.mark.parametrize("signed", [False, True], ids=["positive", "signed"])
def test_every_packet_type_encodes_byte_identically(
    kind: PacketKind, segments: tuple[int, ...], signed: bool
) -> None:
    # Given a frame of 200 random packets of one type (every value across its wire range)
    rng = np.random.default_rng([kind.length, len(segments), signed])
    tokens = (rng.integers(1, 2**24, 200) << 8) | rng.choice(segments, 200)
    frame = encode_columns(kind, columns(kind, tokens, rng, signed=signed))
    # When the columnar encoder and encode_tick write the same ticks
    ours, theirs = encode(frame, None, "ZX1234"), reference(frame, None, "ZX1234")
    # Then the bytes are identical, and schema-valid
    assert ours == theirs
    for record in ours[:20]:
        SCHEMA.validate(json.loads(record))


def test_known_instruments_carry_their_metadata_and_mixed_frames_keep_wire_order() -> None:
    # Given a frame mixing packet types for listed and unlisted instruments
    rng = np.random.default_rng(5)
    reg = registry()
    frames = [
        encode_columns(
            PacketKind.INDEX_FULL,
            columns(PacketKind.INDEX_FULL, np.array([256265]), rng, signed=False),
        ),
        encode_columns(
            PacketKind.FULL,
            columns(PacketKind.FULL, np.array([8960002, 999 << 8 | 2]), rng, signed=False),
        ),
        encode_columns(
            PacketKind.QUOTE, columns(PacketKind.QUOTE, np.array([738561]), rng, signed=True)
        ),
        encode_columns(
            PacketKind.LTP, columns(PacketKind.LTP, np.array([412675]), rng, signed=False)
        ),
    ]
    frame = join_frames(frames)
    # When encoded without and with an account
    for account in (None, "acct-1"):
        assert encode(frame, reg, account) == reference(frame, reg, account)
    # Then records name the underlying, exchange and symbol (JSON-escaped)
    first = [json.loads(r) for r in encode(frame, reg, None)]
    underlyings = [r["underlying"] for r in first]
    assert underlyings == ["NIFTY", "NIFTY", UNKNOWN_UNDERLYING, 'RELIANCE"Q\\', "USDINR"]
    assert first[3]["tradingsymbol"] == 'RELIANCE"Q\\'
    assert "account" not in first[0]


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from([100.0, 10_000.0]))
def test_price_text_is_repr_for_any_wire_price(raw: int, divisor: float) -> None:
    # Given one LTP packet whose price is any int32 over a table divisor
    token = 7 << 8 | (1 if divisor == 100.0 else 6)
    frame = encode_columns(
        PacketKind.LTP, {"instrument_token": [token], "last_price": [raw / divisor]}
    )
    # When encoded, Then the price is written as repr() writes it
    (record,) = encode(frame, None, None)
    assert json.loads(record)["last_price"] == raw / divisor
    assert f'"last_price":{raw / divisor!r},' in record.decode()
