"""The codec: every message and event that crosses Redis or sits in a recording, and every way it can be bad."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from helpers import make_signal
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.bus.codec import DecodeError, decode_event, decode_message, encode, json_schemas
from bot.events import BookEvent
from bot.messages import Costs, Signal

REASONS = {"malformed_json", "not_an_object", "unknown_type", "unknown_schema_version", "invalid_fields", "wrong_type"}

finite = st.floats(allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False)
non_negative = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
timestamps = st.integers(min_value=1, max_value=2**53)
names = st.text(min_size=1, max_size=16)


@st.composite
def signals(draw: st.DrawFn) -> Signal:
    """Any valid Signal, by the model's documented constraints."""
    status = draw(st.sampled_from(["open", "update", "closed"]))
    kind = draw(st.sampled_from(["cex_cex", "cex_dex", "dex_dex"]))
    buy_venue = draw(names)
    sell_venue = draw(names.filter(lambda v: v != buy_venue) if kind == "cex_cex" else names)
    costs = Costs(
        fees=draw(non_negative),
        gas=draw(non_negative),
        base_fee_gwei=draw(st.none() | non_negative),
        priority_fee_gwei=draw(st.none() | non_negative),
    )
    return Signal(
        id=draw(names),
        ts=draw(timestamps),
        opportunity_id=draw(names),
        status=status,
        kind=kind,
        symbol=draw(st.text(min_size=3, max_size=16)),
        buy_venue=buy_venue,
        sell_venue=sell_venue,
        buy_price=draw(positive),
        sell_price=draw(positive),
        buy_book_ts=draw(timestamps),
        sell_book_ts=draw(timestamps),
        size=draw(non_negative if status == "closed" else positive),
        gross_edge_bps=draw(finite),
        net_edge_bps=draw(finite),
        costs=costs,
        score=draw(st.floats(min_value=0.0, max_value=1.0)),
        expected_lifetime_ms=draw(non_negative),
        expected_edge_bps=draw(finite),
        model=draw(names),
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | finite | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def _signal() -> Signal:
    return make_signal()


def _as_dict(message: Signal) -> dict[str, Any]:
    obj: dict[str, Any] = orjson.loads(encode(message))
    return obj


def _decode_or_error(payload: bytes) -> Signal | DecodeError:
    """The decoded message or the DecodeError; any other exception propagates and fails the test."""
    try:
        return decode_message(payload)
    except DecodeError as exc:
        return exc


def _reason(payload: bytes | str, expected_type: str | None = None) -> str:
    with pytest.raises(DecodeError) as info:
        decode_message(payload, expected_type)
    assert info.value.reason in REASONS
    return info.value.reason


@given(signals())
def test_signal_round_trips(signal: Signal) -> None:
    assert decode_message(encode(signal)) == signal
    assert decode_message(encode(signal).decode("utf-8"), expected_type="signal") == signal


@given(signals())
def test_encoded_signal_is_a_utf8_object_with_type_first(signal: Signal) -> None:
    payload = encode(signal)
    obj = orjson.loads(payload.decode("utf-8"))
    assert next(iter(obj)) == "type"
    assert obj["type"] == "signal"
    assert obj["schema_version"] == 1
    assert obj["id"] == signal.id


@given(signals(), st.dictionaries(st.text(min_size=1, max_size=10), json_values, min_size=1, max_size=4))
def test_unknown_extra_fields_are_ignored(signal: Signal, extra: dict[str, Any]) -> None:
    obj = _as_dict(signal)
    for key, value in extra.items():
        if key not in Signal.model_fields:
            obj[key] = value
    assert decode_message(orjson.dumps(obj)) == signal


@settings(max_examples=300)
@given(signals(), st.dictionaries(st.sampled_from(sorted(Signal.model_fields)), json_values, min_size=1))
def test_any_field_values_give_a_signal_or_a_decode_error(signal: Signal, replaced: dict[str, Any]) -> None:
    # A consumer catches DecodeError only: nothing else may escape, whatever a publisher sends.
    outcome = _decode_or_error(orjson.dumps({**_as_dict(signal), **replaced}))
    assert isinstance(outcome, Signal) or outcome.reason in REASONS


@given(st.binary(max_size=64))
def test_arbitrary_bytes_give_a_message_or_a_decode_error(payload: bytes) -> None:
    outcome = _decode_or_error(payload)
    assert isinstance(outcome, Signal) or outcome.reason in REASONS


@pytest.mark.parametrize("version", [2, 0, -1, "1", None, 1.5, [1], {"v": 1}])
def test_unknown_schema_version_is_rejected(version: object) -> None:
    obj = {**_as_dict(_signal()), "schema_version": version}
    assert _reason(orjson.dumps(obj)) == "unknown_schema_version"


def test_missing_schema_version_is_rejected() -> None:
    obj = _as_dict(_signal())
    del obj["schema_version"]
    assert _reason(orjson.dumps(obj)) == "unknown_schema_version"


# DESIGN.md, "Redis channels": every message carries type, schema_version, id and ts, plus the Signal fields.
REQUIRED_SIGNAL_FIELDS = [
    "id",
    "ts",
    "opportunity_id",
    "status",
    "kind",
    "symbol",
    "buy_venue",
    "sell_venue",
    "buy_price",
    "sell_price",
    "buy_book_ts",
    "sell_book_ts",
    "size",
    "gross_edge_bps",
    "net_edge_bps",
    "costs",
    "score",
    "expected_lifetime_ms",
    "expected_edge_bps",
    "model",
]


@pytest.mark.parametrize("field", REQUIRED_SIGNAL_FIELDS)
def test_missing_required_field_is_invalid(field: str) -> None:
    obj = _as_dict(_signal())
    del obj[field]
    assert _reason(orjson.dumps(obj)) == "invalid_fields"


def test_missing_type_is_unknown_type() -> None:
    obj = _as_dict(_signal())
    del obj["type"]
    assert _reason(orjson.dumps(obj)) == "unknown_type"


def _with_raw_value(field: str, raw_json: str) -> str:
    obj = _as_dict(_signal())
    obj[field] = "__placeholder__"
    return orjson.dumps(obj).decode("utf-8").replace('"__placeholder__"', raw_json)


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "nan"])
def test_bare_nan_is_not_json(raw: str) -> None:
    assert _reason(_with_raw_value("net_edge_bps", raw)) == "malformed_json"


@pytest.mark.parametrize("raw", ['"NaN"', '"nan"', '"Infinity"', '"-inf"', '"wide"', "null", "[]", "{}"])
def test_non_finite_or_non_numeric_edge_is_invalid(raw: str) -> None:
    payload = _with_raw_value("net_edge_bps", raw)
    assert orjson.loads(payload)  # still valid JSON
    assert _reason(payload) == "invalid_fields"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("score", 1.5),
        ("score", -0.1),
        ("buy_price", 0.0),
        ("sell_price", -1.0),
        ("size", -0.5),
        ("status", "opened"),
        ("kind", "cex"),
        ("ts", 0),
        ("sell_venue", "alpha"),  # same as buy_venue on a cex_cex signal
        ("size", 0.0),  # zero size on an open signal
        ("costs", {"gas": 1.0}),  # costs without fees
    ],
)
def test_out_of_range_fields_are_invalid(field: str, value: object) -> None:
    obj = {**_as_dict(_signal()), field: value}
    with pytest.raises(DecodeError) as info:
        decode_message(orjson.dumps(obj))
    assert info.value.reason == "invalid_fields"


def test_zero_size_is_fine_on_a_closed_signal() -> None:
    obj = {**_as_dict(_signal()), "status": "closed", "size": 0.0}
    decoded = decode_message(orjson.dumps(obj))
    assert decoded.status == "closed"
    assert decoded.size == 0.0


@pytest.mark.parametrize("payload", [b"", b"{", b"not json", b'{"type": "signal",}', b"\xff\xfe", "{'type': 'signal'}"])
def test_malformed_json(payload: bytes | str) -> None:
    assert _reason(payload) == "malformed_json"


@pytest.mark.parametrize("payload", [b"[]", b"[1, 2]", b"42", b'"signal"', b"null", b"true"])
def test_not_an_object(payload: bytes) -> None:
    assert _reason(payload) == "not_an_object"


@pytest.mark.parametrize("kind", ["bogus", "trade", "decision_v9", 1, None, ["signal"], {"t": "signal"}])
def test_unknown_message_type(kind: object) -> None:
    obj = {**_as_dict(_signal()), "type": kind}
    assert _reason(orjson.dumps(obj)) == "unknown_type"


def test_wrong_type_when_another_is_expected() -> None:
    signal = _signal()
    payload = encode(signal)
    assert _reason(payload, expected_type="decision") == "wrong_type"
    assert _reason(payload, expected_type="book") == "wrong_type"
    assert decode_message(payload, expected_type="signal") == signal


@pytest.mark.parametrize("kind", ["book", "decision", "fill", "control", "gas", "pool"])
def test_a_signal_relabelled_as_another_known_type_is_invalid(kind: str) -> None:
    obj = {**_as_dict(_signal()), "type": kind}
    assert _reason(orjson.dumps(obj)) == "invalid_fields"


def test_decode_error_carries_reason_and_detail() -> None:
    with pytest.raises(DecodeError) as info:
        decode_message(b"[]")
    assert isinstance(info.value, ValueError)
    assert info.value.reason == "not_an_object"
    assert info.value.detail
    assert str(info.value).startswith("not_an_object")


def test_decode_event_reads_a_design_example_line() -> None:
    line = (
        '{"type":"book","venue":"okx","symbol":"BTC/USDT","ts":1763700000123,'
        '"bids":[[97000.1,0.5]],"asks":[[97000.2,0.7]],"unknown":"ignored"}'
    )
    event = decode_event(line)
    assert isinstance(event, BookEvent)
    assert event.bids == ((97000.1, 0.5),)
    assert event.asks == ((97000.2, 0.7),)
    assert event.ts == 1763700000123


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"type":"funding","venue":"okx","ts":1}', "unknown_type"),
        ('{"type":"gas","chain":"ethereum","block":1,"ts":1}', "invalid_fields"),
        ('{"venue":"okx"}', "unknown_type"),
        ('{"type":"book","venue":"okx","symbol":"BTC/USDT","ts":1,"bids":[[2,1]],"asks":[[1,1]]}', "invalid_fields"),
        ('{"type":"trade","venue":"okx","symbol":"BTC/USDT","ts":1,"price":1,"size":1}', "invalid_fields"),
        ("[1]", "not_an_object"),
        ("{", "malformed_json"),
    ],
)
def test_decode_event_errors(line: str, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_event(line)
    assert info.value.reason == reason


def test_decode_event_does_not_take_messages() -> None:
    with pytest.raises(DecodeError) as info:
        decode_event(encode(_signal()))
    assert info.value.reason == "unknown_type"


def test_json_schemas_cover_signal_book_and_trade() -> None:
    schemas = json_schemas()
    assert {"signal", "book", "trade"} <= set(schemas)
    for name in ("signal", "book", "trade"):
        assert "type" in schemas[name]["properties"]
        assert name in orjson.dumps(schemas[name]).decode("utf-8")
    assert {"net_edge_bps", "opportunity_id", "costs"} <= set(schemas["signal"]["properties"])
    assert {"bids", "asks", "venue"} <= set(schemas["book"]["properties"])
