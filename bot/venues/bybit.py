"""A local venue that speaks Bybit's v5 public spot protocol, REST markets included.

Enough of it that an unmodified ccxt.pro `bybit` client reaches it by URL override alone:

- REST `GET /v5/market/instruments-info`: the venue's rows for `category=spot`, an empty list for the `linear`,
  `inverse` and `option` categories that ccxt's `load_markets` asks for too (11 requests, no other call without
  API keys), and `GET /v5/market/time` for ccxt's `adjustForTimeDifference`.
- Websocket `/v5/public/spot`: `{"op":"subscribe","args":[...],"req_id":...}` is acknowledged once per request. A
  topic that does not exist (`error:handler not found,topic:…`) or is already subscribed (`error:already
  subscribed,topic:…`) refuses the whole request with `success: false`, subscribing nothing: ccxt fails every
  watch of a refused request. `{"op":"ping"}` is answered `ret_msg: "pong"`; `unsubscribe` likewise per request.
- `orderbook.{1,50,200,1000}.{SYMBOL}`: a snapshot on subscribe, then deltas of the top `depth` levels, a level
  that leaves the window going out with size "0"; `orderbook.1` sends only snapshots. Each topic's `u` rises by
  one per message (it equals the book's update id wherever the book is no deeper than `depth`); `seq` is a
  cross sequence over the venue's books. Numbers go out as Bybit spot writes them, without trailing zeros.
- `publicTrade.{SYMBOL}`: one trade per message, `S` the taker's side.

ccxt 4.5.90 checks no continuity on Bybit: it replaces its book on every snapshot and applies every delta,
whatever its `u`, so a lost delta goes unnoticed there until the next subscribe; a feed must watch `u` itself.

`snapshot_fail` refuses the next subscribe that would carry a book snapshot (`success: false`, nothing
subscribed): Bybit sends a book snapshot only as the answer to a subscribe, and a refused subscribe is how that
answer fails. ccxt rejects the watch with an ExchangeError and forgets the subscription, so its next watch
subscribes afresh and gets the snapshot. Not modelled: the repeated `orderbook.1` snapshot after 3 s without a
change, and the limit of 10 topics per spot subscribe.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from bot.venues.base import Change, Connection, Instrument, ServerBook, VenueServer, decimal_text

WS_PATH = "/v5/public/spot"
INSTRUMENTS_PATH = "/v5/market/instruments-info"
TIME_PATH = "/v5/market/time"
REST_APIS = ("public", "private", "spot", "futures", "v2")
BOOK_DEPTHS = (1, 50, 200, 1000)
CATEGORIES = frozenset({"spot", "linear", "inverse", "option"})
ROW_FILTERS = ("symbol", "status", "baseCoin")
TAKER_SIDES = {"buy": "Buy", "sell": "Sell"}


def market_id(symbol: str) -> str:
    return symbol.replace("/", "")


def book_topic(depth: int, symbol: str) -> str:
    return f"orderbook.{depth}.{market_id(symbol)}"


def trade_topic(symbol: str) -> str:
    return f"publicTrade.{market_id(symbol)}"


def wire(text: str) -> str:
    """Write a decimal string as Bybit spot does: without trailing zeros."""
    return text.rstrip("0").rstrip(".") if "." in text else text


def instrument_row(instrument: Instrument) -> dict[str, Any]:
    """The instrument as a row of Bybit's `GET /v5/market/instruments-info?category=spot` response."""
    lot = instrument.lot_size
    return {
        "symbol": market_id(instrument.symbol),
        "baseCoin": instrument.base,
        "quoteCoin": instrument.quote,
        "innovation": "0",
        "status": "Trading",
        "marginTrading": "none",
        "stTag": "0",
        "lotSizeFilter": {
            "basePrecision": wire(decimal_text(lot, lot)),
            "quotePrecision": "0.00000001",
            "minOrderQty": wire(decimal_text(instrument.min_size, lot)),
            "maxOrderQty": "1000000",
            "minOrderAmt": "1",
            "maxOrderAmt": "10000000",
        },
        "priceFilter": {"tickSize": wire(decimal_text(instrument.tick_size, instrument.tick_size))},
        "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.1"},
        "symbolType": "",
    }


@dataclass(slots=True)
class BookStream:
    """One `orderbook.{depth}.{SYMBOL}` stream: the window of the book it last sent, and its update id `u`."""

    depth: int
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    u: int = 0

    def advance(self, bids: Sequence[Change], asks: Sequence[Change]) -> tuple[list[Change], list[Change]]:
        """Make the top `depth` levels of the sorted (bids, asks) the window; return what changed in it."""
        new_bids, new_asks = dict(bids[: self.depth]), dict(asks[: self.depth])
        changes = _changes(self.bids, new_bids), _changes(self.asks, new_asks)
        self.bids, self.asks = new_bids, new_asks
        return changes


def _changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[Change]:
    changes = [(price, size) for price, size in new.items() if old.get(price) != size]
    changes.extend((price, "0") for price in old if price not in new)
    return changes


def _ordered(levels: Iterable[Change], *, descending: bool) -> list[Change]:
    return sorted(levels, key=lambda level: float(level[0]), reverse=descending)


def _wire_levels(levels: Iterable[Change]) -> list[list[str]]:
    return [[wire(price), wire(size)] for price, size in levels]


def _taker_side(side: str) -> str:
    try:
        return TAKER_SIDES[side]
    except KeyError:
        raise ValueError(f"trade side must be 'buy' or 'sell', not {side!r}") from None


def _dumps(message: Mapping[str, Any]) -> str:
    return orjson.dumps(message).decode()


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _matches(row: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    return all(row.get(key) == query[key] for key in ROW_FILTERS if key in query)


def _rest_reply(code: int, message: str, result: Mapping[str, Any]) -> web.Response:
    body = {"retCode": code, "retMsg": message, "result": result, "retExtInfo": {}, "time": time.time_ns() // 10**6}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


class BybitVenueServer(VenueServer):
    """One simulated venue speaking Bybit's v5 public spot protocol."""

    protocol = "bybit"
    markets_from_rows = False

    def __init__(self, name: str, instruments: Sequence[Instrument], **options: Any) -> None:
        super().__init__(name, instruments, **options)
        self.instrument_queries: list[dict[str, str]] = []  # every instruments-info query served, in order
        symbols = [inst.symbol for inst in instruments]
        self._streams = {book_topic(depth, s): BookStream(depth) for s in symbols for depth in BOOK_DEPTHS}
        self._topic_symbols = {trade_topic(s): s for s in symbols}
        self._topic_symbols.update({book_topic(depth, s): s for s in symbols for depth in BOOK_DEPTHS})
        self._seq = itertools.count(1)
        self._book_seq: dict[str, int] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(WS_PATH, self._handle_ws)
        app.router.add_get(INSTRUMENTS_PATH, self._handle_instruments)
        app.router.add_get(TIME_PATH, self._handle_time)

    def ccxt_urls(self) -> dict[str, Any]:
        # Every REST base ccxt's bybit knows points here, so no call can leave loopback.
        urls: dict[str, Any] = dict.fromkeys(REST_APIS, self.http_url)
        urls["ws"] = {"public": {"spot": self.ws_url + WS_PATH}}
        return urls

    def market_rows(self) -> list[dict[str, Any]]:
        return [instrument_row(inst) for inst in self.instruments]

    # --- frames -------------------------------------------------------------------------------

    def book_frames(
        self, book: ServerBook, bids: list[Change], asks: list[Change], prev_id: int
    ) -> list[tuple[str, str]]:
        symbol = book.instrument.symbol
        self._book_seq[symbol] = next(self._seq)
        sorted_bids, sorted_asks = book.sorted_bids(), book.sorted_asks()
        frames = []
        for depth in BOOK_DEPTHS:
            topic = book_topic(depth, symbol)
            text = self._stream_frame(topic, book, sorted_bids, sorted_asks, first=prev_id == 0)
            if text is not None:
                frames.append((topic, text))
        return frames

    def trade_frames(
        self, book: ServerBook, trade_id: int, ts: int, price: float, size: float, side: str
    ) -> list[tuple[str, str]]:
        inst = book.instrument
        data = {
            "i": str(trade_id),
            "T": ts,
            "p": wire(inst.price_text(price)),
            "v": wire(inst.size_text(size)),
            "S": _taker_side(side),
            "seq": self._book_seq.get(inst.symbol, 0),
            "s": market_id(inst.symbol),
            "BT": False,
            "RPI": False,
        }
        topic = trade_topic(inst.symbol)
        return [(topic, _dumps({"topic": topic, "ts": ts, "type": "snapshot", "data": [data]}))]

    def _stream_frame(
        self, topic: str, book: ServerBook, bids: list[Change], asks: list[Change], first: bool
    ) -> str | None:
        stream = self._streams[topic]
        bid_changes, ask_changes = stream.advance(bids, asks)
        if not (bid_changes or ask_changes or first):
            return None
        stream.u += 1
        if first or stream.depth == 1:
            return self._snapshot(topic)
        return self._book_frame(
            topic, "delta", book, _ordered(bid_changes, descending=True), _ordered(ask_changes, descending=False)
        )

    def _snapshot(self, topic: str) -> str:
        stream = self._streams[topic]
        book = self.books[self._topic_symbols[topic]]
        return self._book_frame(
            topic,
            "snapshot",
            book,
            _ordered(stream.bids.items(), descending=True),
            _ordered(stream.asks.items(), descending=False),
        )

    def _book_frame(self, topic: str, kind: str, book: ServerBook, bids: list[Change], asks: list[Change]) -> str:
        symbol = book.instrument.symbol
        data = {
            "s": market_id(symbol),
            "b": _wire_levels(bids),
            "a": _wire_levels(asks),
            "u": self._streams[topic].u,
            "seq": self._book_seq[symbol],
        }
        return _dumps({"topic": topic, "ts": book.ts, "type": kind, "data": data, "cts": book.ts})

    # --- websocket ----------------------------------------------------------------------------

    async def _handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        return await self.serve_websocket(request, self._on_text)

    def _on_text(self, conn: Connection, text: str) -> None:
        request = _json_object(text)
        if request is None:
            self._reply(conn, {}, f"Failed to decode incoming data:{text[:100]}", success=False)
        else:
            self._on_request(conn, request)

    def _on_request(self, conn: Connection, request: dict[str, Any]) -> None:
        op, args = request.get("op"), request.get("args")
        if op == "ping":
            self._reply(conn, request, "pong")
        elif op not in ("subscribe", "unsubscribe"):
            self._reply(conn, request, "error:invalid op", success=False)
        elif not isinstance(args, list) or not all(isinstance(topic, str) for topic in args):
            self._reply(conn, request, "Failed to decode incoming data:args is not a list of topics", success=False)
        elif op == "subscribe":
            self._subscribe(conn, request, args)
        else:
            self._unsubscribe(conn, request, args)

    def _subscribe(self, conn: Connection, request: dict[str, Any], topics: list[str]) -> None:
        refusal = self._refusal(conn, topics) or self._snapshot_failure(topics)
        if refusal:
            self._reply(conn, request, refusal, success=False)
            return
        self._reply(conn, request, "subscribe")
        for topic in topics:
            self.subscribe(conn, topic)
            if self._has_snapshot(topic):
                conn.send(self._snapshot(topic))

    def _unsubscribe(self, conn: Connection, request: dict[str, Any], topics: list[str]) -> None:
        unknown = [topic for topic in topics if topic not in self._topic_symbols]
        if unknown:
            self._reply(conn, request, f"error:handler not found,topic:{unknown[0]}", success=False)
            return
        for topic in topics:
            self.unsubscribe(conn, topic)
        self._reply(conn, request, "")

    def _refusal(self, conn: Connection, topics: list[str]) -> str:
        seen = set(conn.topics)
        for topic in topics:
            if topic not in self._topic_symbols:
                return f"error:handler not found,topic:{topic}"
            if topic in seen:
                return f"error:already subscribed,topic:{topic}"
            seen.add(topic)
        return ""

    def _snapshot_failure(self, topics: list[str]) -> str:
        books = [topic for topic in topics if self._has_snapshot(topic)]
        if books and self.take_snapshot_failure():
            return f"error:snapshot unavailable,topic:{books[0]}"
        return ""

    def _has_snapshot(self, topic: str) -> bool:
        stream = self._streams.get(topic)
        return stream is not None and stream.u > 0

    @staticmethod
    def _reply(conn: Connection, request: Mapping[str, Any], ret_msg: str, success: bool = True) -> None:
        reply: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "conn_id": conn.conn_id}
        if request.get("req_id") is not None:
            reply["req_id"] = str(request["req_id"])
        reply["op"] = request.get("op", "")
        conn.send(_dumps(reply))

    # --- REST ---------------------------------------------------------------------------------

    async def _handle_instruments(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.instrument_queries.append(query)
        category = query.get("category", "")
        if category not in CATEGORIES:
            return _rest_reply(10001, "Illegal category", {})
        result: dict[str, Any] = {"category": category, "list": []}
        if category == "spot":
            result["list"] = [row for row in self.market_rows() if _matches(row, query)]
        else:
            result["nextPageCursor"] = ""
        return _rest_reply(0, "OK", result)

    async def _handle_time(self, request: web.Request) -> web.Response:
        now_ns = time.time_ns()
        return _rest_reply(0, "OK", {"timeSecond": str(now_ns // 10**9), "timeNano": str(now_ns)})
