"""A small typed adapter around ccxt.pro, which ships untyped; nothing else imports ccxt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ccxt.pro as ccxtpro
from ccxt.base.errors import ChecksumError, InvalidNonce, NetworkError

from bot.events import Level


@dataclass(frozen=True, slots=True)
class BookCopy:
    """A copy of ccxt's live book (ccxt mutates its own in place)."""

    symbol: str
    timestamp: int | None
    nonce: int | None
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class TradeCopy:
    """One public trade as ccxt parsed it."""

    symbol: str
    timestamp: int | None
    price: float
    amount: float
    side: str


def classify_error(exc: BaseException) -> str:
    """A short, countable name for what went wrong in a watch call."""
    if isinstance(exc, ChecksumError):  # a subclass of InvalidNonce: test it first
        return "checksum"
    if isinstance(exc, InvalidNonce):
        return "gap"
    if isinstance(exc, NetworkError):
        return "disconnect"
    return "error"


def _gap_message(exchange: str, topic: str, last: Any, update_id: Any) -> str:
    return f"{exchange} order book gap: update id jumped from {last} to {update_id} on {topic}"


class _SequencedBybit(ccxtpro.bybit):  # type: ignore[misc]  # ccxt is untyped
    """ccxt's bybit applies order-book deltas without checking their update id `u`, so a lost delta
    leaves a wrong book that still looks live. This checks that `u` rises by one per topic; on a gap it
    drops the book, fails the watch with InvalidNonce and ignores deltas until a new snapshot."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.last_update_id: dict[str, Any] = {}
        self.resync_needed: dict[str, bool] = {}
        """Symbols whose book was dropped after a gap, and whether a waiting watcher was told."""

    def handle_order_book(self, client: Any, message: dict[str, Any]) -> Any:
        topic = str(message.get("topic", ""))
        data = message.get("data") or {}
        update_id = data.get("u")
        if message.get("type") == "snapshot":
            self.last_update_id[topic] = update_id
            return super().handle_order_book(client, message)
        last = self.last_update_id.get(topic)
        if last is None:
            return None  # deltas before a snapshot, or after a gap: nothing to apply them to
        if update_id != last + 1:
            del self.last_update_id[topic]
            market = self.safe_market(data.get("s"), None, None, "spot" if "spot" in client.url else "contract")
            symbol = market["symbol"]
            self.orderbooks.pop(symbol, None)
            message_hash = "orderbook:" + symbol
            # Only a waiting watcher is rejected: ccxt would park a rejection nobody awaits and raise it at a
            # later, unrelated watch. Otherwise the adapter's next watch reports the gap.
            waiting = message_hash in client.futures
            self.resync_needed[symbol] = waiting
            if waiting:
                client.reject(InvalidNonce(_gap_message(self.id, topic, last, update_id)), message_hash)
            return None
        self.last_update_id[topic] = update_id
        return super().handle_order_book(client, message)


_EXCHANGE_CLASSES: dict[str, Any] = {"bybit": _SequencedBybit}


def _levels(side: Any, depth: int) -> tuple[Level, ...]:
    return tuple([(float(level[0]), float(level[1])) for level in side[:depth]])


def _deep_update(target: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def _copy(symbol: str, book: Any, depth: int) -> BookCopy:
    return BookCopy(
        symbol=symbol,
        timestamp=book.get("timestamp"),
        nonce=book.get("nonce"),
        bids=_levels(book["bids"], depth),
        asks=_levels(book["asks"], depth),
    )


class CcxtProClient:
    """One ccxt.pro exchange instance, optionally pointed at other URLs and given its markets."""

    def __init__(
        self,
        exchange_id: str,
        url_overrides: Mapping[str, Any] | None = None,
        market_rows: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        exchange_class = _EXCHANGE_CLASSES.get(exchange_id) or getattr(ccxtpro, exchange_id)
        self._exchange: Any = exchange_class({"enableRateLimit": False, "newUpdates": True})
        if url_overrides:
            _deep_update(self._exchange.urls["api"], url_overrides)
        if market_rows is not None:
            # Markets from the instrument rows the venue serves: no REST call needed.
            self._exchange.set_markets(self._exchange.parse_markets(list(market_rows)))

    async def watch_book(self, symbol: str, depth: int) -> BookCopy:
        """Wait for the next book update of `symbol` and copy its top `depth` levels."""
        resync_needed: dict[str, bool] | None = getattr(self._exchange, "resync_needed", None)
        if resync_needed is not None and symbol in resync_needed:
            announced = resync_needed.pop(symbol)
            await self._exchange.un_watch_order_book(symbol)  # the next watch resubscribes: a fresh snapshot
            if not announced:
                raise InvalidNonce(f"{self._exchange.id} order book gap on {symbol}; resubscribing")
        book = await self._exchange.watch_order_book(symbol)
        return _copy(symbol, book, depth)

    async def watch_trades(self, symbol: str) -> list[TradeCopy]:
        """Wait for the next public trades of `symbol` (only the new ones)."""
        trades = await self._exchange.watch_trades(symbol)
        return [
            TradeCopy(symbol, t.get("timestamp"), float(t["price"]), float(t["amount"]), str(t.get("side")))
            for t in trades
        ]

    async def load_markets(self) -> None:
        """Load markets over REST unless they were given at construction."""
        if self._exchange.markets is None:
            await self._exchange.load_markets()

    def current_book(self, symbol: str, depth: int) -> BookCopy | None:
        """Copy the book ccxt holds for `symbol` now, without waiting; None before its snapshot."""
        book = self._exchange.orderbooks.get(symbol)
        return None if book is None else _copy(symbol, book, depth)

    async def close(self) -> None:
        """Close every websocket and HTTP session of this client."""
        await self._exchange.close()
