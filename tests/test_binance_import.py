"""The raw Binance importer on real captured frames: books agree with the venue's own ticker, trades all kept."""

from __future__ import annotations

import dataclasses
import gzip
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.events import BookEvent, Level, MarketEvent, TradeEvent
from bot.importers.binance_raw import ImportReport, _Side, canonical_symbol, import_binance_raw
from bot.recording import RecordingError, read_events, time_key
from bot.rejections import RejectionCounter

FIXTURES = Path(__file__).parent / "fixtures" / "binance_ws"
CAPTURES = {
    "binance": FIXTURES / "spot_btcusdt_20240808.gz",
    "binanceusdm": FIXTURES / "usdm_btcusdt_20240808.gz",
}
VENUES = list(CAPTURES)
SYMBOL = "BTC/USDT"

Frame = tuple[int, dict[str, Any]]


@dataclass
class Imported:
    report: ImportReport
    events: list[MarketEvent]
    rejections: RejectionCounter


def run_import(paths: list[Path], out: Path) -> Imported:
    """Import, then read the recording back through the recording reader, which must reject nothing."""
    rejections = RejectionCounter()
    report = import_binance_raw(paths, out, rejections=rejections)
    read_rejections = RejectionCounter()
    events = list(read_events(out, read_rejections))
    assert read_rejections.total == 0
    return Imported(report, events, rejections)


def raw_frames(path: Path) -> list[Frame]:
    """Return (receive time ms, decoded JSON) for every line of a capture."""
    with gzip.open(path, "rb") as file:
        split = (line.partition(b" ") for line in file)
        return [(int(stamp) // 1_000_000, orjson.loads(raw)) for stamp, _, raw in split]


def channel(obj: dict[str, Any]) -> str:
    return str(obj["stream"]).partition("@")[2] if "stream" in obj else "snapshot"


def is_book_frame(obj: dict[str, Any]) -> bool:
    return channel(obj) == "bookTicker" or channel(obj).startswith("depth")


def books_of(events: list[MarketEvent], venue: str) -> list[BookEvent]:
    return [event for event in events if isinstance(event, BookEvent) and event.venue == venue]


def trades_of(events: list[MarketEvent], venue: str) -> list[TradeEvent]:
    return [event for event in events if isinstance(event, TradeEvent) and event.venue == venue]


def ticker_checkpoints(frames: list[Frame], ticker_frames: list[Frame]) -> dict[int, tuple[Level, Level]]:
    """Map each receive millisecond with a book frame to the venue's ticker for the newest update id seen by then.

    The newest update id is the highest `u` of any diff or ticker received so far. Its ticker is the one of
    `ticker_frames` with the highest `u` at or below it, wherever it sits in the file: a diff may arrive before the
    ticker of its last update.
    """
    tickers = sorted(
        ((obj["data"]["u"], obj["data"]) for _, obj in ticker_frames if channel(obj) == "bookTicker"), key=itemgetter(0)
    )
    ids = [update_id for update_id, _ in tickers]
    newest = 0
    checkpoints: dict[int, tuple[Level, Level]] = {}
    for recv_ms, obj in frames:
        if not is_book_frame(obj):
            continue
        newest = max(newest, obj["data"]["u"])
        index = bisect_right(ids, newest) - 1
        if index >= 0:
            ticker = tickers[index][1]
            checkpoints[recv_ms] = ((float(ticker["b"]), float(ticker["B"])), (float(ticker["a"]), float(ticker["A"])))
    return checkpoints


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    return run_import(list(CAPTURES.values()), tmp_path_factory.mktemp("import") / "binance.jsonl.gz")


def top_mismatches(books: list[BookEvent], checkpoints: dict[int, tuple[Level, Level]]) -> tuple[list[int], int]:
    """Return the checkpoints where the latest book event at or before them disagrees, and how many were checked."""
    stamps = [book.ts for book in books]
    latest = {ms: books[index - 1] for ms in checkpoints if (index := bisect_right(stamps, ms)) > 0}
    return [ms for ms, book in latest.items() if (book.bids[0], book.asks[0]) != checkpoints[ms]], len(latest)


@pytest.mark.parametrize("venue", VENUES)
def test_book_top_matches_the_venue_ticker(imported: Imported, venue: str) -> None:
    frames = raw_frames(CAPTURES[venue])
    checkpoints = ticker_checkpoints(frames, frames)
    mismatches, checked = top_mismatches(books_of(imported.events, venue), checkpoints)
    assert mismatches == []
    # Only the frames before the snapshot syncs the book go unchecked.
    assert checked > 0.9 * len(checkpoints) > 400


@pytest.mark.parametrize("venue", VENUES)
def test_book_from_snapshot_and_diffs_alone_matches_the_venue_ticker(tmp_path: Path, venue: str) -> None:
    source = CAPTURES[venue]
    lines = gzip.decompress(source.read_bytes()).splitlines(keepends=True)
    diffs_only = tmp_path / source.name
    diffs_only.write_bytes(gzip.compress(b"".join(line for line in lines if b"@bookTicker" not in line)))

    result = run_import([diffs_only], tmp_path / "out.jsonl")

    # With no ticker to correct it, every book event is the snapshot plus diffs, checked against the real tickers.
    checkpoints = ticker_checkpoints(raw_frames(diffs_only), raw_frames(source))
    mismatches, checked = top_mismatches(books_of(result.events, venue), checkpoints)
    assert mismatches == []
    assert checked > 0.9 * len(checkpoints) > 100


@pytest.mark.parametrize("venue", VENUES)
def test_buffered_diffs_sync_the_book_at_the_snapshot(imported: Imported, venue: str) -> None:
    snapshot_ms = next(ms for ms, obj in raw_frames(CAPTURES[venue]) if channel(obj) == "snapshot")
    # Both excerpts buffer a diff that straddles the snapshot, so the book is live from the snapshot line on.
    assert books_of(imported.events, venue)[0].ts == snapshot_ms


@pytest.mark.parametrize("venue", VENUES)
def test_every_trade_frame_becomes_a_trade_with_the_taker_side(imported: Imported, venue: str) -> None:
    frames = [obj["data"] for _, obj in raw_frames(CAPTURES[venue]) if channel(obj) == "trade"]
    trades = trades_of(imported.events, venue)
    expected = [(float(d["p"]), float(d["q"]), "sell" if d["m"] else "buy", d["T"]) for d in frames]
    assert [(t.price, t.size, t.side, t.exchange_ts) for t in trades] == expected
    assert {t.side for t in trades} == {"buy", "sell"}


def test_recording_is_valid_ordered_and_labelled(imported: Imported) -> None:
    events = imported.events
    assert imported.rejections.total == 0
    assert len(events) == imported.report.events
    assert [time_key(event) for event in events] == sorted(time_key(event) for event in events)
    for venue in VENUES:
        stream = [event for event in events if event.venue == venue]
        counts = imported.report.streams[(venue, SYMBOL)]
        assert (counts.books, counts.trades) == (len(books_of(events, venue)), len(trades_of(events, venue)))
        assert (counts.gaps, counts.skipped_lines, counts.invalid_events) == (0, 0, 0)
        assert all(event.symbol == SYMBOL and event.recv_ts == event.ts for event in stream)
        assert [event.ts for event in stream] == sorted(event.ts for event in stream)
    assert {event.market for event in events if event.venue == "binanceusdm"} == {"BTC/USDT:USDT"}
    assert {event.market for event in events if event.venue == "binance"} == {None}


def test_depth_events_carry_the_exchange_time(imported: Imported) -> None:
    spot = raw_frames(CAPTURES["binance"])
    snapshot_id = next(obj["lastUpdateId"] for _, obj in spot if channel(obj) == "snapshot")
    applied = [
        obj["data"]["E"] for _, obj in spot if channel(obj).startswith("depth") and obj["data"]["u"] > snapshot_id
    ]
    # Spot tickers carry no exchange time, so the spot book events that have one are exactly the applied diffs.
    stamped = [book.exchange_ts for book in books_of(imported.events, "binance") if book.exchange_ts is not None]
    assert sorted(stamped) == sorted(applied)

    perp = raw_frames(CAPTURES["binanceusdm"])
    perp_books = books_of(imported.events, "binanceusdm")
    assert all(book.exchange_ts is not None for book in perp_books)
    perp_snapshot_id = next(obj["lastUpdateId"] for _, obj in perp if channel(obj) == "snapshot")
    diff_times = Counter(
        obj["data"]["E"] for _, obj in perp if channel(obj).startswith("depth") and obj["data"]["u"] >= perp_snapshot_id
    )
    assert not diff_times - Counter(book.exchange_ts for book in perp_books)


@pytest.mark.parametrize("venue", VENUES)
def test_a_missing_diff_is_a_gap_that_ends_the_book(imported: Imported, tmp_path: Path, venue: str) -> None:
    source = CAPTURES[venue]
    lines = gzip.decompress(source.read_bytes()).splitlines(keepends=True)
    depth_lines = [index for index, line in enumerate(lines) if b"@depth" in line]
    middle = len(depth_lines) // 2
    removed, detector = depth_lines[middle], depth_lines[middle + 1]
    removed_ms, gap_ms = (int(lines[index].partition(b" ")[0]) // 1_000_000 for index in (removed, detector))
    corrupt = tmp_path / source.name
    corrupt.write_bytes(gzip.compress(b"".join(lines[:removed] + lines[removed + 1 :])))
    other = next(path for name, path in CAPTURES.items() if name != venue)

    result = run_import([corrupt, other], tmp_path / "out.jsonl.gz")

    counts = result.report.streams[(venue, SYMBOL)]
    assert counts.gaps == 1
    assert result.rejections.count(source.name, "gap") == 1
    assert counts.unsynced_frames > 0
    books, intact = books_of(result.events, venue), books_of(imported.events, venue)
    assert [book for book in books if book.ts < removed_ms] == [book for book in intact if book.ts < removed_ms]
    # Tickers between the missing diff and the next one still apply: the gap only shows at the next diff.
    assert removed_ms <= books[-1].ts <= gap_ms
    assert len(books) < len(intact)
    assert any(ms > gap_ms and channel(obj) == "bookTicker" for ms, obj in raw_frames(corrupt))
    assert trades_of(result.events, venue) == trades_of(imported.events, venue)
    other_venue = next(name for name in VENUES if name != venue)
    assert books_of(result.events, other_venue) == books_of(imported.events, other_venue)


def test_unusable_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    lines = gzip.decompress(CAPTURES["binance"].read_bytes()).splitlines(keepends=True)[:60]
    junk = [
        b"1723161254300000000 {not json\n",
        b'1723161254300000000 {"stream":"btcusdt@kline_1m","data":{}}\n',
        b'1723161254300000000 {"stream":"ethusdt@trade","data":{}}\n',
        b'1723161254300000000 {"stream":"btcusdt@trade","data":{"p":"1"}}\n',
        b'1723161254300000000 {"stream":"btcusdt@trade","data":{"p":"-1","q":"1","m":true,"T":1}}\n',
    ]
    path = tmp_path / "spot_btcusdt_junk.gz"
    path.write_bytes(gzip.compress(b"".join(lines[:30] + junk + lines[30:])))
    rejections = RejectionCounter()

    report = import_binance_raw([path], tmp_path / "out.jsonl", rejections=rejections)

    assert report.streams[("binance", SYMBOL)].skipped_lines == len(junk)
    assert rejections.by_reason() == {"malformed_frame": 3, "unknown_stream": 1, "other_symbol": 1}
    assert report.events == len(list(read_events(tmp_path / "out.jsonl")))


def test_unreadable_or_unrecognised_inputs_are_errors_naming_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl.gz"
    unnamed = tmp_path / "btcusdt.gz"
    unnamed.write_bytes(CAPTURES["binance"].read_bytes())
    with pytest.raises(RecordingError, match=re.escape("btcusdt.gz")):
        import_binance_raw([unnamed], out)
    not_gzip = tmp_path / "spot_btcusdt_plain.gz"
    not_gzip.write_bytes(gzip.decompress(CAPTURES["binance"].read_bytes()))
    with pytest.raises(RecordingError, match=re.escape("spot_btcusdt_plain.gz")):
        import_binance_raw([not_gzip], out)
    # Neither the recording nor its partial file is left behind.
    assert set(tmp_path.iterdir()) == {unnamed, not_gzip}


@pytest.mark.parametrize(
    ("raw", "symbol"),
    [("BTCUSDT", "BTC/USDT"), ("ethusdt", "ETH/USDT"), ("BTCFDUSD", "BTC/FDUSD"), ("ETHBTC", "ETH/BTC")],
)
def test_canonical_symbol(raw: str, symbol: str) -> None:
    assert canonical_symbol(raw) == symbol


@pytest.mark.parametrize("raw", ["USDT", "BTCXYZ"])
def test_canonical_symbol_needs_a_known_quote_and_a_base(raw: str) -> None:
    with pytest.raises(ValueError, match=raw):
        canonical_symbol(raw)


prices = st.integers(min_value=1, max_value=40).map(lambda tick: tick / 4)
operations = st.tuples(st.sampled_from(["set", "keep_up_to", "keep_from"]), prices, st.sampled_from([0.0, 1.0, 2.5]))


@given(st.lists(operations, max_size=60))
def test_book_side_matches_a_plain_dict(ops: list[tuple[str, float, float]]) -> None:
    side, model = _Side(), dict[float, float]()
    for op, price, size in ops:
        if op == "set":
            side.set(price, size)
            model[price] = size
            model = {p: s for p, s in model.items() if s > 0}
        elif op == "keep_up_to":
            side.keep_up_to(price)
            model = {p: s for p, s in model.items() if p <= price}
        else:
            side.keep_from(price)
            model = {p: s for p, s in model.items() if p >= price}
        assert side.sizes == model
        assert side.prices == sorted(model)
    assert side.highest(3) == tuple(sorted(model.items(), reverse=True)[:3])
    assert side.lowest(3) == tuple(sorted(model.items())[:3])


def test_a_capture_without_snapshot_gives_trades_but_no_books(tmp_path: Path) -> None:
    lines = gzip.decompress(CAPTURES["binance"].read_bytes()).splitlines(keepends=True)
    path = tmp_path / "spot_btcusdt_nosnapshot.gz"
    path.write_bytes(gzip.compress(b"".join(line for line in lines if b"lastUpdateId" not in line)))
    rejections = RejectionCounter()

    report = import_binance_raw([path], tmp_path / "out.jsonl", rejections=rejections)

    counts = report.streams[("binance", SYMBOL)]
    assert counts.books == 0
    assert counts.trades == sum(b"@trade" in line for line in lines)
    assert counts.unsynced_frames == sum(b"@depth" in line or b"@bookTicker" in line for line in lines)
    assert rejections.count(path.name, "no_snapshot") == 1
    summary = orjson.loads(orjson.dumps(report.to_json()))
    assert summary["streams"] == [{"venue": "binance", "symbol": SYMBOL, **dataclasses.asdict(counts)}]
