"""Decision, Fill, Control and the market messages: round trips through the codec, and every way to reject one."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.bus.codec import DecodeError, decode_message, encode, json_schemas
from bot.events import BookEvent, GasEvent, PoolEvent
from bot.messages import (
    BookMessage,
    Control,
    Decision,
    Fill,
    FillLeg,
    GasMessage,
    GasPlan,
    Message,
    PoolMessage,
    SlippageBps,
    Window,
)

TS = 1_763_700_000_123


def make_decision(**overrides: object) -> Decision:
    fields: dict[str, object] = {
        "ts": TS,
        "signal_id": "sig-1",
        "opportunity_id": "opp-1",
        "action": "execute",
        "reasons": ["ok"],
        "size": 0.25,
        "slippage_bps": {"buy": 0.4, "sell": 0.7},
        "expected_pnl": 1.25,
        "window": {"not_before_ts": TS + 50, "deadline_ts": TS + 150},
        "gas": None,
        "risk_state": "ACTIVE",
        "symbol": "BTC/USDT",
        "kind": "cex_cex",
        "buy_venue": "alpha",
        "sell_venue": "beta",
    }
    fields.update(overrides)
    return Decision.model_validate(fields)


def make_fill(**overrides: object) -> Fill:
    fields: dict[str, object] = {
        "ts": TS + 80,
        "decision_id": "dec-1",
        "legs": [
            {"venue": "alpha", "side": "buy", "price": 97000.1, "size": 0.25, "fee": 2.4},
            {"venue": "beta", "side": "sell", "price": 97010.3, "size": 0.25, "fee": 2.4},
        ],
        "realised_pnl": -2.25,
        "status": "filled",
        "symbol": "BTC/USDT",
    }
    fields.update(overrides)
    return Fill.model_validate(fields)


def make_control(**overrides: object) -> Control:
    fields: dict[str, object] = {"ts": TS, "role": "risk", "command": "halt", "reason": "maintenance"}
    fields.update(overrides)
    return Control.model_validate(fields)


BOOK = BookEvent(venue="okx", symbol="BTC/USDT", ts=TS, bids=((97000.1, 0.5),), asks=((97000.2, 0.7),))
GAS = GasEvent(chain="ethereum", block=21_000_000, ts=TS, base_fee_gwei=14.2, priority_fee_gwei=1.1, gas_used_ratio=0.6)
POOL = PoolEvent(
    chain="ethereum", dex="uniswap_v2", pool="0xb4e1", symbol="ETH/USDT", base="ETH", quote="USDT",
    reserve_base=5012.3, reserve_quote=17_455_231.0, fee_bps=30, block=21_000_000, ts=TS,
)  # fmt: skip


def examples() -> list[Message]:
    return [
        make_decision(),
        make_decision(action="skip", size=0.0, reasons=["expired"], risk_state="HALTED", symbol=None, kind=None),
        make_decision(kind="cex_dex", gas={"max_fee_gwei": 29.5, "priority_fee_gwei": 1.1, "target_block": 21_000_001}),
        make_fill(),
        make_fill(status="missed", legs=[], realised_pnl=0.0),
        make_control(),
        make_control(command="resume", reason=""),
        BookMessage.of(BOOK),
        GasMessage.of(GAS),
        PoolMessage.of(POOL),
    ]


def _as_dict(message: Message) -> dict[str, Any]:
    obj: dict[str, Any] = orjson.loads(encode(message))
    return obj


def _reason(obj: dict[str, Any]) -> str:
    with pytest.raises(DecodeError) as info:
        decode_message(orjson.dumps(obj))
    return info.value.reason


@pytest.mark.parametrize("message", examples(), ids=lambda m: f"{m.type}")
def test_round_trip_through_the_codec(message: Message) -> None:
    payload = encode(message)
    assert next(iter(orjson.loads(payload))) == "type"
    assert decode_message(payload) == message
    assert decode_message(payload, expected_type=message.type) == message
    assert isinstance(decode_message(payload), type(message))


@pytest.mark.parametrize("message", examples(), ids=lambda m: f"{m.type}")
def test_unknown_extra_fields_are_ignored(message: Message) -> None:
    assert decode_message(orjson.dumps({**_as_dict(message), "x_future": [1, {"a": 2}]})) == message


@pytest.mark.parametrize("message", examples(), ids=lambda m: f"{m.type}")
@pytest.mark.parametrize("version", [0, 2, "1", None, 1.0])
def test_unknown_schema_version_is_rejected(message: Message, version: object) -> None:
    assert _reason({**_as_dict(message), "schema_version": version}) == "unknown_schema_version"


# DESIGN.md, "Redis channels": the fields each message must carry.
REQUIRED = {
    "decision": [
        "id", "ts", "signal_id", "opportunity_id", "action", "reasons", "size", "slippage_bps", "expected_pnl",
        "window", "gas", "risk_state",
    ],
    "fill": ["id", "ts", "decision_id", "legs", "realised_pnl", "status"],
    "control": ["id", "ts", "role", "command", "reason"],
    "book": ["id", "ts", "venue", "symbol", "bids", "asks"],
    "gas": ["id", "ts", "chain", "block", "base_fee_gwei", "priority_fee_gwei", "gas_used_ratio"],
    "pool": ["id", "ts", "chain", "dex", "pool", "symbol", "base", "quote", "reserve_base", "reserve_quote", "fee_bps",
             "block"],
}  # fmt: skip
_BY_TYPE = {m.type: m for m in examples()}


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k, fields in REQUIRED.items() for f in fields])
def test_missing_required_field_is_rejected(kind: str, field: str) -> None:
    obj = _as_dict(_BY_TYPE[kind])
    del obj[field]
    assert _reason(obj) == "invalid_fields"


def test_decision_sends_gas_null_and_leaves_out_unset_extras() -> None:
    obj = _as_dict(make_decision(buy_price=None))
    assert obj["gas"] is None  # required: null without on-chain legs, never absent
    assert "buy_price" not in obj
    assert "sig" not in obj


@pytest.mark.parametrize(
    ("message", "field", "value"),
    [
        (make_decision(), "action", "buy"),
        (make_decision(), "risk_state", "PAUSED"),
        (make_decision(), "size", 0.0),  # execute with nothing to trade
        (make_decision(), "slippage_bps", {"buy": -1.0, "sell": 0.0}),
        (make_decision(), "window", {"not_before_ts": TS}),
        (make_decision(), "expected_pnl", "NaN"),
        (make_fill(), "status", "done"),
        (make_fill(), "legs", [{"venue": "alpha", "side": "hold", "price": 1.0, "size": 1.0, "fee": 0.0}]),
        (make_fill(), "legs", [{"venue": "alpha", "side": "buy", "price": 0.0, "size": 1.0, "fee": 0.0}]),
        (make_control(), "command", "reboot"),
        (BookMessage.of(BOOK), "bids", [[97000.3, 1.0]]),  # crossed
        (GasMessage.of(GAS), "gas_used_ratio", 1.5),
        (PoolMessage.of(POOL), "symbol", "BTC/USDT"),
    ],
)
def test_invalid_values_are_rejected(message: Message, field: str, value: object) -> None:
    assert _reason({**_as_dict(message), field: value}) == "invalid_fields"


def test_market_messages_are_the_events_plus_an_envelope() -> None:
    book = BookMessage.of(BOOK)
    assert isinstance(book, BookEvent)
    assert book.model_dump(exclude={"id", "schema_version", "sig"}) == BOOK.model_dump()
    assert book.schema_version == 1
    assert book.id and BookMessage.of(BOOK).id != book.id
    assert GasMessage.of(GAS).base_fee_gwei == GAS.base_fee_gwei
    assert PoolMessage.of(POOL).price == POOL.price


@given(
    st.lists(st.sampled_from(["ok", "expired", "halted", "min_notional"]), max_size=4),
    st.floats(min_value=0.0, max_value=1e6, exclude_min=True, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_any_valid_decision_round_trips(reasons: list[str], size: float, pnl: float) -> None:
    decision = make_decision(
        reasons=reasons, size=size, expected_pnl=pnl, gas=GasPlan(max_fee_gwei=1, priority_fee_gwei=0)
    )
    assert decode_message(encode(decision)) == decision


def test_models_compose() -> None:
    decision = make_decision(slippage_bps=SlippageBps(buy=0, sell=0), window=Window(not_before_ts=1, deadline_ts=2))
    assert decision.window.deadline_ts == 2
    assert make_fill(legs=[FillLeg(venue="a", side="sell", price=1.0, size=0.0, fee=0.0)]).legs[0].side == "sell"


def test_json_schemas_name_every_message() -> None:
    schemas = json_schemas()
    assert {"signal", "decision", "fill", "control", "book_message", "gas_message", "pool_message"} <= set(schemas)
    assert {"book", "trade", "gas", "pool"} <= set(schemas)
    assert "signal_id" in schemas["decision"]["required"]
    assert "schema_version" in schemas["book_message"]["properties"]
    assert "schema_version" not in schemas["book"]["properties"]
