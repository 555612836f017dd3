"""Recordings: round trips, bad lines skipped and counted, stable merge by time, unreadable files named."""

from __future__ import annotations

import gzip
import re
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.bus.codec import encode
from bot.events import BookEvent, MarketEvent, TradeEvent
from bot.recording import RecordingError, RecordingWriter, merge_events, read_events, time_key
from bot.rejections import RejectionCounter

positive = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False)
timestamps = st.integers(min_value=1, max_value=2**53)
optional_ts = st.none() | timestamps
names = st.text(min_size=1, max_size=12)
symbols = st.text(min_size=3, max_size=12)


@st.composite
def books(draw: st.DrawFn) -> BookEvent:
    """Any valid book: distinct prices split into bids below asks, each side best first."""
    prices = sorted(draw(st.lists(positive, min_size=2, max_size=10, unique=True)))
    split = draw(st.integers(min_value=1, max_value=len(prices) - 1))
    sizes = st.lists(positive, min_size=len(prices), max_size=len(prices))
    levels = list(zip(prices, draw(sizes), strict=True))
    return BookEvent(
        venue=draw(names),
        symbol=draw(symbols),
        ts=draw(timestamps),
        recv_ts=draw(optional_ts),
        exchange_ts=draw(optional_ts),
        market=draw(st.none() | names),
        bids=tuple(reversed(levels[:split])),
        asks=tuple(levels[split:]),
    )


@st.composite
def trades(draw: st.DrawFn) -> TradeEvent:
    """Any valid trade."""
    return TradeEvent(
        venue=draw(names),
        symbol=draw(symbols),
        ts=draw(timestamps),
        recv_ts=draw(optional_ts),
        exchange_ts=draw(optional_ts),
        market=draw(st.none() | names),
        price=draw(positive),
        size=draw(positive),
        side=draw(st.sampled_from(["buy", "sell"])),
    )


events = st.one_of(books(), trades())


def _book(ts: int, venue: str = "okx", recv_ts: int | None = None) -> BookEvent:
    return BookEvent(venue=venue, symbol="BTC/USDT", ts=ts, recv_ts=recv_ts, bids=[(100.0, 1.0)], asks=[(101.0, 2.0)])


def _trade(ts: int, venue: str = "okx") -> TradeEvent:
    return TradeEvent(venue=venue, symbol="BTC/USDT", ts=ts, price=100.5, size=0.1, side="buy")


def _write(path: Path, evts: list[MarketEvent]) -> None:
    with RecordingWriter(path) as writer:
        for event in evts:
            writer.write(event)


@pytest.mark.parametrize("name", ["rec.jsonl", "rec.jsonl.gz"])
@settings(max_examples=40, deadline=None)
@given(evts=st.lists(events, max_size=20))
def test_round_trip_keeps_every_event_in_order(name: str, evts: list[MarketEvent]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        with RecordingWriter(path) as writer:
            for event in evts:
                writer.write(event)
        assert writer.count == len(evts)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
        assert list(read_events(path)) == evts


def test_lines_are_json_with_type_first(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    _write(path, [_book(1), _trade(2)])
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line)["type"] for line in lines] == ["book", "trade"]
    assert all(line.startswith(b'{"type":') for line in lines)


def test_close_twice_is_harmless_and_flushes_gzip(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    writer = RecordingWriter(path)
    writer.write(_book(1))
    writer.close()
    writer.close()
    assert gzip.decompress(path.read_bytes()).count(b"\n") == 1


@pytest.mark.parametrize("name", ["bad.jsonl", "bad.jsonl.gz"])
def test_bad_lines_are_skipped_and_counted_by_reason(tmp_path: Path, name: str) -> None:
    good = [_book(1), _trade(2), _book(3)]
    crossed = orjson.loads(encode(good[0])) | {"bids": [[102.0, 1.0]]}
    lines = [
        encode(good[0]),
        b"{not json",
        encode(good[1]),
        orjson.dumps(crossed),
        b"[1, 2]",
        b"",
        orjson.dumps({"type": "funding", "venue": "okx", "symbol": "BTC/USDT", "ts": 5}),
        encode(good[2]),
    ]
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    rejections = RejectionCounter()

    assert list(read_events(path, rejections)) == good
    assert rejections.by_reason() == {"malformed_json": 1, "invalid_fields": 1, "not_an_object": 1, "unknown_type": 1}
    assert rejections.count(name, "unknown_type") == 1


def test_time_key_is_receive_time_when_known() -> None:
    late_exchange_clock = _book(ts=900, venue="a", recv_ts=2)
    assert time_key(late_exchange_clock) == 2
    assert time_key(_book(ts=7)) == 7


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.lists(st.integers(min_value=1, max_value=6), max_size=8).map(sorted), min_size=1, max_size=4))
def test_merge_is_stable_by_time_key(keys: list[list[int]]) -> None:
    # Every event is distinct (venue = file, price = line), some keyed by recv_ts and some by ts alone.
    files = [
        [
            _book(ts=key, venue=f"f{i}") if line % 2 else _book(ts=10_000 + line, venue=f"f{i}", recv_ts=key)
            for line, key in enumerate(file_keys)
        ]
        for i, file_keys in enumerate(keys)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"f{i}.jsonl" for i in range(len(files))]
        for path, evts in zip(paths, files, strict=True):
            _write(path, list(evts))
        merged = list(merge_events(paths))
    # sorted() is stable over the files concatenated in order: exactly "ties keep file order, then line order".
    assert merged == sorted((event for evts in files for event in evts), key=time_key)


def test_merge_counts_bad_lines_per_file(tmp_path: Path) -> None:
    first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    _write(first, [_book(1), _book(4)])
    second.write_bytes(encode(_trade(2)) + b"\nnope\n" + encode(_trade(3)) + b"\n")
    rejections = RejectionCounter()
    assert [event.ts for event in merge_events([first, second], rejections)] == [1, 2, 3, 4]
    assert rejections.count("two.jsonl", "malformed_json") == 1
    assert rejections.total == 1


def test_plain_file_named_gz_is_a_recording_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl.gz"
    path.write_bytes(encode(_book(1)) + b"\n")
    with pytest.raises(RecordingError, match=re.escape("plain.jsonl.gz")):
        list(read_events(path))


def test_truncated_gzip_is_a_recording_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(encode(_book(ts)) + b"\n" for ts in range(1, 200)))[:-30])
    with pytest.raises(RecordingError, match=re.escape("cut.jsonl.gz")):
        list(read_events(path))


def test_missing_file_is_a_recording_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=re.escape("absent.jsonl")):
        list(read_events(tmp_path / "absent.jsonl"))


def test_unwritable_path_is_a_recording_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="no-such-dir"):
        RecordingWriter(tmp_path / "no-such-dir" / "rec.jsonl")
