"""Import raw Binance websocket captures (hftbacktest's format) into one recording.

Each input line is `<receive time, ns> <raw JSON>`: a combined-stream frame (`<symbol>@depth…`, `@bookTicker`,
`@trade`) or, once near the start, the REST depth snapshot that the depth diffs sync against. Each book is kept as
a live client keeps it (Binance's "how to manage a local order book correctly", as ccxt.pro's binance applies it).
A later snapshot line would resync the book, but the captures hold one each, so after a sequence gap a book emits
nothing more.
"""

from __future__ import annotations

import heapq
import math
import os
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import ValidationError

from bot.events import BookEvent, Level, MarketEvent, TradeEvent
from bot.recording import RecordingError, RecordingWriter, read_lines
from bot.rejections import RejectionCounter

_VENUES = {"spot": ("binance", False), "usdm": ("binanceusdm", True)}
# Longest first, so that BTCFDUSD reads as BTC/FDUSD.
_QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "DAI", "BTC", "ETH", "BNB", "EUR", "TRY")


class _Unusable(Exception):
    """A line that carries nothing to import; `reason` is the rejection label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class StreamCounts:
    """What one input stream (venue, symbol) held and what became of it."""

    lines: int = 0
    books: int = 0
    trades: int = 0
    skipped_lines: int = 0
    """Unusable lines: bad JSON, malformed frames, unknown streams, another symbol's frames."""
    invalid_events: int = 0
    """Events that failed validation (a crossed book, …): counted, not written."""
    stale_frames: int = 0
    """Diffs and tickers older than the book, dropped as the sync rules say."""
    unsynced_frames: int = 0
    """Diffs and tickers that arrived while the book was out of sync: before the first applied diff, or after a gap."""
    gaps: int = 0
    """Sequence gaps; with one snapshot per file a gap ends that book's events."""


@dataclass
class ImportReport:
    """What an import wrote, per (venue, symbol) stream."""

    out: Path
    streams: dict[tuple[str, str], StreamCounts] = field(default_factory=dict)

    @property
    def events(self) -> int:
        """Count the events written."""
        return sum(counts.books + counts.trades for counts in self.streams.values())

    @property
    def gaps(self) -> int:
        """Count the sequence gaps over every stream."""
        return sum(counts.gaps for counts in self.streams.values())

    def to_json(self) -> dict[str, Any]:
        """Return the report as a JSON-ready object, one entry per stream."""
        streams = [
            {"venue": venue, "symbol": symbol, **asdict(counts)} for (venue, symbol), counts in self.streams.items()
        ]
        return {"out": str(self.out), "events": self.events, "gaps": self.gaps, "streams": streams}


class _FileSpec(NamedTuple):
    venue: str
    futures: bool
    raw_symbol: str
    symbol: str
    market: str | None


class _Diff(NamedTuple):
    first_id: int
    last_id: int
    prev_id: int | None
    bids: list[Level]
    asks: list[Level]
    event_ms: int


class _Ticker(NamedTuple):
    update_id: int
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    event_ms: int | None


class _Snapshot(NamedTuple):
    last_update_id: int
    bids: list[Level]
    asks: list[Level]


class _Trade(NamedTuple):
    price: float
    size: float
    side: Literal["buy", "sell"]
    trade_ms: int


_Frame = _Diff | _Ticker | _Snapshot | _Trade


def canonical_symbol(raw: str) -> str:
    """Map a Binance market id (`BTCUSDT`, any case) to the canonical pair (`BTC/USDT`)."""
    upper = raw.upper()
    for quote in _QUOTES:
        if upper.endswith(quote) and len(upper) > len(quote):
            return f"{upper[: -len(quote)]}/{quote}"
    raise ValueError(f"no known quote asset at the end of {raw!r}")


def _file_spec(path: Path) -> _FileSpec:
    kind, _, rest = path.name.partition("_")
    raw_symbol = rest.partition("_")[0].lower()
    if kind not in _VENUES or not raw_symbol:
        raise RecordingError(f"{path}: expected a capture named spot_<symbol>_… or usdm_<symbol>_… (hftbacktest)")
    try:
        symbol = canonical_symbol(raw_symbol)
    except ValueError as exc:
        raise RecordingError(f"{path}: {exc}") from None
    venue, futures = _VENUES[kind]
    market = f"{symbol}:{symbol.partition('/')[2]}" if futures else None
    return _FileSpec(venue, futures, raw_symbol, symbol, market)


def _price(raw: Any) -> float:
    value = float(raw)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"price {raw!r} is not a finite number > 0")
    return value


def _size(raw: Any) -> float:
    value = float(raw)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"size {raw!r} is not a finite number >= 0")
    return value


def _levels(raw: Any) -> list[Level]:
    # Every level is checked before any is applied, so a bad frame never leaves a half-updated book.
    return [(_price(price), _size(size)) for price, size in raw]


def _parse_ticker(data: dict[str, Any]) -> _Ticker:
    ticker = _Ticker(
        int(data["u"]),
        _price(data["b"]),
        _size(data["B"]),
        _price(data["a"]),
        _size(data["A"]),
        int(data["E"]) if "E" in data else None,
    )
    if ticker.bid >= ticker.ask:
        raise ValueError(f"crossed ticker: bid {ticker.bid} >= ask {ticker.ask}")
    return ticker


def _parse_frame(obj: Any, raw_symbol: str) -> _Frame:
    """Parse one decoded line into a typed frame; KeyError, TypeError, ValueError when it is malformed."""
    if "lastUpdateId" in obj and "stream" not in obj:
        return _Snapshot(int(obj["lastUpdateId"]), _levels(obj["bids"]), _levels(obj["asks"]))
    name, _, channel = str(obj["stream"]).partition("@")
    if name != raw_symbol:
        raise _Unusable("other_symbol", name)
    data = obj["data"]
    if channel == "trade":
        # `m`: the buyer is the maker, so the taker sold.
        return _Trade(_price(data["p"]), _size(data["q"]), "sell" if data["m"] else "buy", int(data["T"]))
    if channel == "bookTicker":
        return _parse_ticker(data)
    if channel == "depth" or channel.startswith("depth@"):
        prev_id = int(data["pu"]) if "pu" in data else None
        return _Diff(int(data["U"]), int(data["u"]), prev_id, _levels(data["b"]), _levels(data["a"]), int(data["E"]))
    raise _Unusable("unknown_stream", str(obj["stream"]))


class _Side:
    """One side of a book: size by price, and the prices kept sorted ascending for a cheap top N."""

    __slots__ = ("prices", "sizes")

    def __init__(self) -> None:
        self.sizes: dict[float, float] = {}
        self.prices: list[float] = []

    def reset(self, levels: list[Level]) -> None:
        """Replace every level."""
        self.sizes = {price: size for price, size in levels if size > 0.0}
        self.prices = sorted(self.sizes)

    def set(self, price: float, size: float) -> None:
        """Set the size at a price; size 0 removes the level."""
        if size > 0.0:
            if price not in self.sizes:
                insort(self.prices, price)
            self.sizes[price] = size
        elif self.sizes.pop(price, None) is not None:
            del self.prices[bisect_left(self.prices, price)]

    def keep_up_to(self, price: float) -> None:
        """Remove every level priced above `price`."""
        cut = bisect_right(self.prices, price)
        for removed in self.prices[cut:]:
            del self.sizes[removed]
        del self.prices[cut:]

    def keep_from(self, price: float) -> None:
        """Remove every level priced below `price`."""
        cut = bisect_left(self.prices, price)
        for removed in self.prices[:cut]:
            del self.sizes[removed]
        del self.prices[:cut]

    def lowest(self, n: int) -> tuple[Level, ...]:
        """Return the n lowest-priced levels, lowest first."""
        return tuple((price, self.sizes[price]) for price in self.prices[:n])

    def highest(self, n: int) -> tuple[Level, ...]:
        """Return the n highest-priced levels, highest first."""
        return tuple((price, self.sizes[price]) for price in reversed(self.prices[-n:]))


class _Sync(Enum):
    WAITING = "waiting for the snapshot, buffering diffs"
    SNAPSHOT = "snapshot taken, no diff applied yet"
    LIVE = "in sync"
    BROKEN = "out of sync after a gap"


class _Outcome(Enum):
    APPLIED = "applied"
    BUFFERED = "buffered"
    STALE = "stale"
    UNSYNCED = "unsynced"
    GAP = "gap"


class _Book:
    """One Binance order book, kept in sync from a REST snapshot, depth diffs and book tickers."""

    def __init__(self, futures: bool) -> None:
        self.futures = futures
        self.state = _Sync.WAITING
        self.update_id = 0
        """The snapshot's lastUpdateId, then the last applied diff's `u`."""
        self.bids = _Side()
        self.asks = _Side()
        self.ticker: _Ticker | None = None
        self._pending: list[_Diff] = []

    def on_snapshot(self, snapshot: _Snapshot) -> list[_Diff]:
        """Reset to the snapshot; return the diffs buffered before it, to be fed again in order."""
        self.bids.reset(snapshot.bids)
        self.asks.reset(snapshot.asks)
        self.update_id = snapshot.last_update_id
        self.state = _Sync.SNAPSHOT
        pending, self._pending = self._pending, []
        return pending

    def discard_pending(self) -> int:
        """Drop the diffs still waiting for a snapshot; return how many there were."""
        count = len(self._pending)
        self._pending = []
        return count

    def on_diff(self, diff: _Diff) -> _Outcome:
        """Buffer, apply or drop one depth diff by Binance's sync rules; a gap puts the book out of sync."""
        if self.state is _Sync.WAITING:
            self._pending.append(diff)
            return _Outcome.BUFFERED
        if self.state is _Sync.BROKEN:
            return _Outcome.UNSYNCED
        outcome = self._check_futures(diff) if self.futures else self._check_spot(diff)
        if outcome is _Outcome.APPLIED:
            self._apply(diff)
        elif outcome is _Outcome.GAP:
            self.state = _Sync.BROKEN
        return outcome

    def on_ticker(self, ticker: _Ticker) -> _Outcome:
        """Keep the newest ticker; apply it to an in-sync book when it is newer than the book."""
        if self.ticker is not None and ticker.update_id <= self.ticker.update_id:
            return _Outcome.STALE
        self.ticker = ticker
        if self.state is not _Sync.LIVE:
            return _Outcome.UNSYNCED
        if ticker.update_id <= self.update_id:
            return _Outcome.STALE
        self._correct(ticker)
        return _Outcome.APPLIED

    def top(self, depth: int) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        """Return the best `depth` bids and asks, best first."""
        return self.bids.highest(depth), self.asks.lowest(depth)

    def _check_spot(self, diff: _Diff) -> _Outcome:
        if diff.last_id <= self.update_id:
            return _Outcome.STALE
        if self.state is _Sync.LIVE:
            in_sequence = diff.first_id == self.update_id + 1
        else:
            in_sequence = diff.first_id <= self.update_id + 1
        return _Outcome.APPLIED if in_sequence else _Outcome.GAP

    def _check_futures(self, diff: _Diff) -> _Outcome:
        if self.state is _Sync.LIVE:
            if diff.prev_id == self.update_id:
                return _Outcome.APPLIED
            return _Outcome.STALE if diff.last_id <= self.update_id else _Outcome.GAP
        if diff.last_id < self.update_id:
            return _Outcome.STALE
        # ccxt also accepts a first diff whose `pu` is the snapshot's id.
        straddles = diff.first_id <= self.update_id or diff.prev_id == self.update_id
        return _Outcome.APPLIED if straddles else _Outcome.GAP

    def _apply(self, diff: _Diff) -> None:
        for price, size in diff.bids:
            self.bids.set(price, size)
        for price, size in diff.asks:
            self.asks.set(price, size)
        self.update_id = diff.last_id
        self.state = _Sync.LIVE
        # Spot diffs come in 100 ms batches and lag the ticker: a newer ticker still overrides the top they set.
        if self.ticker is not None and self.ticker.update_id > self.update_id:
            self._correct(self.ticker)

    def _correct(self, ticker: _Ticker) -> None:
        self.bids.keep_up_to(ticker.bid)
        self.bids.set(ticker.bid, ticker.bid_size)
        self.asks.keep_from(ticker.ask)
        self.asks.set(ticker.ask, ticker.ask_size)


class _FileImport:
    """Turn one raw capture into market events, each with its receive time in ns for the merge."""

    def __init__(
        self, path: Path, spec: _FileSpec, depth: int, counts: StreamCounts, rejections: RejectionCounter | None
    ) -> None:
        self.path = path
        self.spec = spec
        self.depth = depth
        self.counts = counts
        self.rejections = rejections
        self.book = _Book(spec.futures)

    def events(self) -> Iterator[tuple[int, MarketEvent]]:
        """Yield (receive time ns, event) in file order."""
        for line in read_lines(self.path):
            if not line.strip():
                continue
            self.counts.lines += 1
            try:
                stamp, _, raw = line.partition(b" ")
                recv_ns = int(stamp)
                frame = _parse_frame(orjson.loads(raw), self.spec.raw_symbol)
            except _Unusable as exc:
                self._skip(exc.reason, str(exc))
                continue
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                self._skip("malformed_frame", f"{type(exc).__name__}: {exc}")
                continue
            for event in self._handle(recv_ns // 1_000_000, frame):
                yield recv_ns, event
        if unsynced := self.book.discard_pending():
            self.counts.unsynced_frames += unsynced
            self._reject("no_snapshot", f"{unsynced} depth diffs but no REST snapshot line to sync them from")

    def _handle(self, recv_ms: int, frame: _Frame) -> Iterator[MarketEvent]:
        if isinstance(frame, _Trade):
            yield from self._trade(recv_ms, frame)
        elif isinstance(frame, _Ticker):
            if self._tally(self.book.on_ticker(frame)):
                yield from self._book_event(recv_ms, frame.event_ms)
        elif isinstance(frame, _Snapshot):
            for diff in self.book.on_snapshot(frame):
                yield from self._diff(recv_ms, diff)
        else:
            yield from self._diff(recv_ms, frame)

    def _diff(self, recv_ms: int, diff: _Diff) -> Iterator[MarketEvent]:
        previous_id = self.book.update_id
        outcome = self.book.on_diff(diff)
        if outcome is _Outcome.GAP:
            self.counts.gaps += 1
            detail = f"diff U={diff.first_id} u={diff.last_id} pu={diff.prev_id} after u={previous_id}: book ends here"
            self._reject("gap", detail)
        elif self._tally(outcome):
            yield from self._book_event(recv_ms, diff.event_ms)

    def _tally(self, outcome: _Outcome) -> bool:
        """Count a frame that did not change the book; tell whether it did."""
        if outcome is _Outcome.STALE:
            self.counts.stale_frames += 1
        elif outcome is _Outcome.UNSYNCED:
            self.counts.unsynced_frames += 1
        return outcome is _Outcome.APPLIED

    def _book_event(self, recv_ms: int, exchange_ms: int | None) -> Iterator[BookEvent]:
        bids, asks = self.book.top(self.depth)
        try:
            event = BookEvent(
                venue=self.spec.venue,
                symbol=self.spec.symbol,
                market=self.spec.market,
                ts=recv_ms,
                recv_ts=recv_ms,
                exchange_ts=exchange_ms,
                bids=bids,
                asks=asks,
            )
        except ValidationError as exc:
            self.counts.invalid_events += 1
            self._reject("invalid_event", str(exc.errors()[0]["msg"]))
            return
        self.counts.books += 1
        yield event

    def _trade(self, recv_ms: int, trade: _Trade) -> Iterator[TradeEvent]:
        try:
            event = TradeEvent(
                venue=self.spec.venue,
                symbol=self.spec.symbol,
                market=self.spec.market,
                ts=recv_ms,
                recv_ts=recv_ms,
                exchange_ts=trade.trade_ms,
                price=trade.price,
                size=trade.size,
                side=trade.side,
            )
        except ValidationError as exc:
            self.counts.invalid_events += 1
            self._reject("invalid_event", str(exc.errors()[0]["msg"]))
            return
        self.counts.trades += 1
        yield event

    def _skip(self, reason: str, detail: str) -> None:
        self.counts.skipped_lines += 1
        self._reject(reason, detail)

    def _reject(self, reason: str, detail: str) -> None:
        if self.rejections is not None:
            self.rejections.reject(self.path.name, reason, detail)


def import_binance_raw(
    paths: Sequence[Path], out: Path, depth: int = 20, rejections: RejectionCounter | None = None
) -> ImportReport:
    """Import raw Binance captures into one recording at `out`, merged by receive time; return the counts.

    Raise RecordingError, naming the file, for an input that cannot be read or whose name does not say its market.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if not paths:
        raise ValueError("no input files")
    out = Path(out)
    report = ImportReport(out=out)
    imports = []
    for path in map(Path, paths):
        spec = _file_spec(path)
        counts = report.streams.setdefault((spec.venue, spec.symbol), StreamCounts())
        imports.append(_FileImport(path, spec, depth, counts, rejections))
    # Written beside `out` and renamed at the end, so a failed import never leaves a plausible-looking recording.
    partial = out.with_name(f".partial-{out.name}")
    try:
        with RecordingWriter(partial) as writer:
            for _, event in heapq.merge(*(item.events() for item in imports), key=itemgetter(0)):
                writer.write(event)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return report
