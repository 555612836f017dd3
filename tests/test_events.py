"""BookEvent and TradeEvent: what validates, what is rejected, and the round trip through the codec."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.bus.codec import decode_event, encode
from bot.events import BookEvent, TradeEvent

BAD_NUMBERS = (math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, -1e-9)

sizes = st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False)
timestamps = st.integers(min_value=1, max_value=2**53)
names = st.text(min_size=1, max_size=12)
symbols = st.text(min_size=3, max_size=12)


@st.composite
def book_dicts(draw: st.DrawFn, max_levels: int = 8) -> dict[str, Any]:
    """A valid book as plain data: every bid price below a split point, every ask price above it."""
    split = draw(st.floats(min_value=1e-6, max_value=1e12))
    bid_prices = draw(
        st.lists(
            st.floats(min_value=0.0, max_value=split, exclude_min=True, exclude_max=True),
            min_size=1,
            max_size=max_levels,
            unique=True,
        )
    )
    ask_prices = draw(
        st.lists(
            st.floats(min_value=split, max_value=1e300, exclude_min=True),
            min_size=1,
            max_size=max_levels,
            unique=True,
        )
    )
    bids = [[price, draw(sizes)] for price in sorted(bid_prices, reverse=True)]
    asks = [[price, draw(sizes)] for price in sorted(ask_prices)]
    book: dict[str, Any] = {
        "type": "book",
        "venue": draw(names),
        "symbol": draw(symbols),
        "ts": draw(timestamps),
        "bids": bids,
        "asks": asks,
    }
    for optional in ("recv_ts", "exchange_ts"):
        if draw(st.booleans()):
            book[optional] = draw(timestamps)
    if draw(st.booleans()):
        book["market"] = draw(names)
    return book


def _levels(book: dict[str, Any], side: str) -> list[list[float]]:
    return [list(level) for level in book[side]]


@given(book_dicts())
def test_valid_book_validates_and_keeps_its_levels(data: dict[str, Any]) -> None:
    book = BookEvent.model_validate(data)
    assert [list(level) for level in book.bids] == data["bids"]
    assert [list(level) for level in book.asks] == data["asks"]
    assert book.best_bid == data["bids"][0][0]
    assert book.best_ask == data["asks"][0][0]
    assert book.best_bid < book.best_ask


@given(book_dicts())
def test_valid_book_round_trips_through_the_codec(data: dict[str, Any]) -> None:
    book = BookEvent.model_validate(data)
    decoded = decode_event(encode(book))
    assert decoded == book
    assert isinstance(decoded, BookEvent)


@given(book_dicts())
def test_encoded_book_puts_type_first_even_with_optional_fields(data: dict[str, Any]) -> None:
    # DESIGN.md, "Recording format": one event per line, the `type` field first.
    line = encode(BookEvent.model_validate(data))
    assert next(iter(orjson.loads(line))) == "type"


@given(
    book_dicts(),
    st.sampled_from(["bids", "asks"]),
    st.data(),
    st.sampled_from([0, 1]),
    st.sampled_from(BAD_NUMBERS),
)
def test_any_bad_price_or_size_is_rejected(
    data: dict[str, Any], side: str, pick: st.DataObject, column: int, bad: float
) -> None:
    levels = _levels(data, side)
    row = pick.draw(st.integers(min_value=0, max_value=len(levels) - 1))
    levels[row][column] = bad
    with pytest.raises(ValidationError):
        BookEvent.model_validate({**data, side: levels})


@given(book_dicts(), st.sampled_from(["bids", "asks"]), st.data())
def test_unsorted_levels_are_rejected(data: dict[str, Any], side: str, pick: st.DataObject) -> None:
    levels = _levels(data, side)
    if len(levels) < 2:
        levels.append(list(levels[0]))  # a duplicate price is out of order too
    else:
        i = pick.draw(st.integers(min_value=0, max_value=len(levels) - 2))
        j = pick.draw(st.integers(min_value=i + 1, max_value=len(levels) - 1))
        levels[i], levels[j] = levels[j], levels[i]
    with pytest.raises(ValidationError):
        BookEvent.model_validate({**data, side: levels})


@given(book_dicts(), st.sampled_from(["bids", "asks"]), st.data())
def test_duplicate_price_levels_are_rejected(data: dict[str, Any], side: str, pick: st.DataObject) -> None:
    levels = _levels(data, side)
    row = pick.draw(st.integers(min_value=0, max_value=len(levels) - 1))
    levels.insert(row + 1, [levels[row][0], levels[row][1] * 0.5 or levels[row][1]])
    with pytest.raises(ValidationError):
        BookEvent.model_validate({**data, side: levels})


@given(book_dicts(), st.sampled_from(["bids", "asks"]))
def test_empty_side_is_rejected(data: dict[str, Any], side: str) -> None:
    with pytest.raises(ValidationError):
        BookEvent.model_validate({**data, side: []})


@given(book_dicts(), st.booleans())
def test_crossed_or_locked_top_is_rejected(data: dict[str, Any], locked: bool) -> None:
    best_ask = data["asks"][0][0]
    # Put a bid at (locked) or above (crossed) the best ask, keeping the bid side itself sorted.
    top = best_ask if locked else best_ask * 2.0
    if not math.isfinite(top):
        top = best_ask
    bids = [[top, 1.0], *_levels(data, "bids")]
    with pytest.raises(ValidationError):
        BookEvent.model_validate({**data, "bids": bids})


def test_locked_book_names_the_problem() -> None:
    with pytest.raises(ValidationError, match="crossed"):
        BookEvent(venue="okx", symbol="BTC/USDT", ts=1, bids=((100.0, 1.0),), asks=((100.0, 1.0),))


@given(book_dicts(max_levels=2), st.sampled_from(["venue", "symbol", "ts", "bids", "asks", "market"]))
def test_book_is_frozen(data: dict[str, Any], field: str) -> None:
    book = BookEvent.model_validate(data)
    before = book.model_dump()
    with pytest.raises(ValidationError):
        setattr(book, field, getattr(book, field))
    assert book.model_dump() == before


def test_book_levels_cannot_be_mutated_in_place() -> None:
    book = BookEvent(venue="okx", symbol="BTC/USDT", ts=1, bids=((100.0, 1.0),), asks=((101.0, 1.0),))
    with pytest.raises(TypeError):
        book.bids[0] = (200.0, 1.0)  # type: ignore[index]


@st.composite
def trade_dicts(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "trade",
        "venue": draw(names),
        "symbol": draw(symbols),
        "ts": draw(timestamps),
        "price": draw(sizes),
        "size": draw(sizes),
        "side": draw(st.sampled_from(["buy", "sell"])),
    }


@given(trade_dicts())
def test_valid_trade_round_trips(data: dict[str, Any]) -> None:
    trade = TradeEvent.model_validate(data)
    line = encode(trade)
    assert next(iter(orjson.loads(line))) == "type"
    assert decode_event(line) == trade


@given(trade_dicts(), st.text().filter(lambda side: side not in ("buy", "sell")))
def test_trade_side_must_be_buy_or_sell(data: dict[str, Any], side: str) -> None:
    with pytest.raises(ValidationError):
        TradeEvent.model_validate({**data, "side": side})


@given(trade_dicts(), st.sampled_from(["price", "size"]), st.sampled_from(BAD_NUMBERS))
def test_trade_rejects_nan_and_non_positive_numbers(data: dict[str, Any], field: str, bad: float) -> None:
    with pytest.raises(ValidationError):
        TradeEvent.model_validate({**data, field: bad})


def test_trade_is_frozen() -> None:
    trade = TradeEvent(venue="okx", symbol="BTC/USDT", ts=1, price=100.0, size=1.0, side="buy")
    with pytest.raises(ValidationError):
        trade.price = 101.0  # type: ignore[misc]
    assert trade.price == 100.0


@settings(max_examples=50)
@given(book_dicts(max_levels=3), st.sampled_from([0, -1]))
def test_book_timestamp_must_be_positive(data: dict[str, Any], ts: int) -> None:
    with pytest.raises(ValidationError):
        BookEvent.model_validate({**data, "ts": ts})


_level_values = st.one_of(
    st.floats(min_value=0.5, max_value=2.0),
    st.sampled_from([0.0, -1.0, float("nan"), float("inf")]),
)
_rough_levels = st.lists(st.tuples(_level_values, _level_values), max_size=4).map(tuple)


@settings(max_examples=300, deadline=None)
@given(bids=_rough_levels, asks=_rough_levels, ts=st.integers(-1, 3))
def test_from_levels_accepts_and_rejects_exactly_what_validation_does(
    bids: tuple[tuple[float, float], ...], asks: tuple[tuple[float, float], ...], ts: int
) -> None:
    """The feeds' fast constructor is the validating model, minus pydantic's per-field work."""
    try:
        expected: BookEvent | None = BookEvent.model_validate(
            {"venue": "okx", "symbol": "BTC/USDT", "ts": ts, "bids": bids, "asks": asks, "recv_ts": 5}
        )
    except ValidationError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError):
            BookEvent.from_levels("okx", "BTC/USDT", ts, bids, asks, recv_ts=5)
    else:
        built = BookEvent.from_levels("okx", "BTC/USDT", ts, bids, asks, recv_ts=5)
        assert built == expected
        assert list(built.__dict__.items()) == list(expected.__dict__.items())  # field order: the JSON's order
        assert built.model_fields_set == expected.model_fields_set
        assert built.model_dump_json() == expected.model_dump_json()
