"""A local venue that speaks Binance spot's public market-data protocol.

Enough of it that an unmodified ccxt.pro `binance` client connects by URL override alone: the raw-stream
websocket (`/ws`, and `/ws/<anything>` as ccxt opens `/ws/0`, `/ws/1`, …) where `{"method":"SUBSCRIBE"}`,
`UNSUBSCRIBE` and `LIST_SUBSCRIPTIONS` are answered `{"result":…,"id":…}` and bad requests get Binance's
`{"error":{"code","msg"},"id"}`; `<symbol>@depth` and `@depth@100ms` diffs (`depthUpdate`, one update id per
publish, so `U == u == previous u + 1`) that a client syncs to the REST snapshot `GET /api/v3/depth` by Binance's
rules; `@bookTicker`; `@trade`; and `GET /api/v3/exchangeInfo`, with empty USD-M and COIN-M `exchangeInfo` so
ccxt's `load_markets` works here too. Prices and sizes go out with Binance's 8 decimals. aiohttp answers pings.

Not served: the combined `/stream` endpoint, streams named in the URL (`/ws/btcusdt@trade`: the base class
gives no hook to subscribe a connection before its first frame, so those are refused with HTTP 501),
`SET_PROPERTY` / `GET_PROPERTY`, and the 1000 ms batching of `@depth` (both depth streams get every change).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from bot.venues.base import Change, Connection, Instrument, ServerBook, VenueServer, decimal_text

DEPTH = "depth"
DEPTH_100MS = "depth@100ms"
BOOK_TICKER = "bookTicker"
TRADE = "trade"
CHANNELS = frozenset({DEPTH, DEPTH_100MS, BOOK_TICKER, TRADE})
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS")

WIRE_DECIMALS = 8
DEFAULT_DEPTH_LIMIT = 100
MAX_DEPTH_LIMIT = 5000
# Limits like those Binance lists for BTCUSDT; the simulated instruments carry only tick, lot and minimum size.
MAX_PRICE = "1000000.00000000"
MAX_QTY = "9000.00000000"
MIN_NOTIONAL = "5.00000000"
MAX_NOTIONAL = "9000000.00000000"
INTERNAL_ERROR = "Internal error; unable to process your request. Please try again."  # code -1001, HTTP 5xx


class _Refused(Exception):
    """A request Binance answers with an error code and message instead of a result."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


def market_id(symbol: str) -> str:
    return symbol.replace("/", "")


def stream_id(symbol: str) -> str:
    """The lower-case market id that stream names start with (`btcusdt@depth`)."""
    return market_id(symbol).lower()


def wire_decimal(text: str) -> str:
    """`text` with at least Binance's 8 decimals ("100.1" → "100.10000000"); anything not a decimal unchanged."""
    whole, dot, fraction = text.partition(".")
    if not whole.isdigit() or (dot and not fraction.isdigit()):
        return text
    return f"{whole}.{fraction.ljust(WIRE_DECIMALS, '0')}"


def _step_text(step: float) -> str:
    return wire_decimal(decimal_text(step, step))


def symbol_row(instrument: Instrument) -> dict[str, Any]:
    """The instrument as a `symbols` row of Binance's `GET /api/v3/exchangeInfo` response."""
    return {
        "symbol": market_id(instrument.symbol),
        "status": "TRADING",
        "baseAsset": instrument.base,
        "baseAssetPrecision": WIRE_DECIMALS,
        "quoteAsset": instrument.quote,
        "quotePrecision": WIRE_DECIMALS,
        "quoteAssetPrecision": WIRE_DECIMALS,
        "baseCommissionPrecision": WIRE_DECIMALS,
        "quoteCommissionPrecision": WIRE_DECIMALS,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": _filters(instrument),
        "permissions": [],
        "permissionSets": [["SPOT"]],
    }


def _filters(instrument: Instrument) -> list[dict[str, Any]]:
    tick, lot = _step_text(instrument.tick_size), _step_text(instrument.lot_size)
    min_qty = wire_decimal(instrument.size_text(instrument.min_size))
    return [
        {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": MAX_PRICE, "tickSize": tick},
        {"filterType": "LOT_SIZE", "minQty": min_qty, "maxQty": MAX_QTY, "stepSize": lot},
        {
            "filterType": "NOTIONAL",
            "minNotional": MIN_NOTIONAL,
            "applyMinToMarket": True,
            "maxNotional": MAX_NOTIONAL,
            "applyMaxToMarket": False,
            "avgPriceMins": 5,
        },
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
    ]


def _exchange_info(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": time.time_ns() // 1_000_000,
        "rateLimits": [],
        "exchangeFilters": [],
        "symbols": rows,
    }


def _levels(changes: Sequence[Change], descending: bool) -> list[list[str]]:
    ordered = sorted(changes, key=lambda level: float(level[0]), reverse=descending)
    return [[wire_decimal(price), wire_decimal(size)] for price, size in ordered]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _rest_error(code: int, msg: str, status: int) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, dumps=_json)


def _is_request_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class BinanceVenueServer(VenueServer):
    """One simulated venue speaking Binance spot's public websocket streams and REST market data."""

    protocol = "binance"
    markets_from_rows = False
    snapshots_served: int = 0
    """`GET /api/v3/depth` requests answered with a book."""
    snapshots_failed: int = 0
    """`GET /api/v3/depth` requests failed by the `snapshot_fail` fault."""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/ws", self._handle_ws)
        app.router.add_get("/ws/{stream:.*}", self._handle_ws)
        app.router.add_get("/api/v3/depth", self._handle_depth)
        app.router.add_get("/api/v3/exchangeInfo", self._handle_exchange_info)
        app.router.add_get("/fapi/v1/exchangeInfo", self._handle_no_markets)
        app.router.add_get("/dapi/v1/exchangeInfo", self._handle_no_markets)

    def ccxt_urls(self) -> dict[str, Any]:
        return {
            "ws": {"spot": f"{self.ws_url}/ws"},  # ccxt appends /<stream index>
            "public": f"{self.http_url}/api/v3",
            # load_markets also asks the USD-M and COIN-M APIs; here they list nothing.
            "fapiPublic": f"{self.http_url}/fapi/v1",
            "dapiPublic": f"{self.http_url}/dapi/v1",
        }

    def market_rows(self) -> list[dict[str, Any]]:
        return [symbol_row(inst) for inst in self.instruments]

    def book_frames(
        self, book: ServerBook, bids: list[Change], asks: list[Change], prev_id: int
    ) -> list[tuple[str, str]]:
        symbol = book.instrument.symbol
        diff = {
            "e": "depthUpdate",
            "E": book.ts,
            "s": market_id(symbol),
            "U": prev_id + 1,
            "u": book.update_id,
            "b": _levels(bids, descending=True),
            "a": _levels(asks, descending=False),
        }
        text = _json(diff)
        frames = [(f"{stream_id(symbol)}@{DEPTH}", text), (f"{stream_id(symbol)}@{DEPTH_100MS}", text)]
        if book.bids and book.asks:
            frames.append((f"{stream_id(symbol)}@{BOOK_TICKER}", self._book_ticker(book)))
        return frames

    def trade_frames(
        self, book: ServerBook, trade_id: int, ts: int, price: float, size: float, side: str
    ) -> list[tuple[str, str]]:
        if side not in ("buy", "sell"):
            raise ValueError(f"trade side must be 'buy' or 'sell', got {side!r}")
        inst = book.instrument
        trade = {
            "e": "trade",
            "E": ts,
            "s": market_id(inst.symbol),
            "t": trade_id,
            "p": wire_decimal(inst.price_text(price)),
            "q": wire_decimal(inst.size_text(size)),
            "T": ts,
            "m": side == "sell",  # the buyer was the maker: the taker sold
            "M": True,
        }
        return [(f"{stream_id(inst.symbol)}@{TRADE}", _json(trade))]

    def _depth_body(self, symbol: str, limit: int = DEFAULT_DEPTH_LIMIT) -> dict[str, Any]:
        """The body of `GET /api/v3/depth` for `symbol`: the current book, top `limit` levels a side."""
        book = self.books[symbol]
        return {
            "lastUpdateId": book.update_id,
            "bids": [[wire_decimal(p), wire_decimal(s)] for p, s in book.sorted_bids()[:limit]],
            "asks": [[wire_decimal(p), wire_decimal(s)] for p, s in book.sorted_asks()[:limit]],
        }

    @staticmethod
    def _book_ticker(book: ServerBook) -> str:
        bid = max(book.bids.items(), key=lambda level: float(level[0]))
        ask = min(book.asks.items(), key=lambda level: float(level[0]))
        ticker = {
            "u": book.update_id,
            "s": market_id(book.instrument.symbol),
            "b": wire_decimal(bid[0]),
            "B": wire_decimal(bid[1]),
            "a": wire_decimal(ask[0]),
            "A": wire_decimal(ask[1]),
        }
        return _json(ticker)

    # --- REST ---------------------------------------------------------------------------------

    async def _handle_depth(self, request: web.Request) -> web.Response:
        try:
            symbol, limit = self._depth_query(request.query)
        except _Refused as refused:
            return _rest_error(refused.code, refused.msg, refused.status)
        if self.take_snapshot_failure():
            self.snapshots_failed += 1
            return _rest_error(-1001, INTERNAL_ERROR, status=503)
        self.snapshots_served += 1
        return web.json_response(self._depth_body(symbol, limit), dumps=_json)

    def _depth_query(self, query: Mapping[str, str]) -> tuple[str, int]:
        if not query.get("symbol"):
            raise _Refused(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        symbol = self._symbols_by_id().get(query["symbol"])
        if symbol is None:
            raise _Refused(-1121, "Invalid symbol.")
        limit = query.get("limit", str(DEFAULT_DEPTH_LIMIT))
        if not limit.isdigit():
            raise _Refused(-1100, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.")
        return symbol, min(int(limit), MAX_DEPTH_LIMIT)

    async def _handle_exchange_info(self, request: web.Request) -> web.Response:
        return web.json_response(_exchange_info(self.market_rows()), dumps=_json)

    async def _handle_no_markets(self, request: web.Request) -> web.Response:
        return web.json_response(_exchange_info([]), dumps=_json)

    def _symbols_by_id(self) -> dict[str, str]:
        return {market_id(symbol): symbol for symbol in self.books}

    # --- websocket ----------------------------------------------------------------------------

    async def _handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        stream = request.match_info.get("stream", "")
        if self._is_stream(stream):
            raise web.HTTPNotImplemented(text=f"connect to /ws and SUBSCRIBE to {stream}: URL streams are not served")
        return await self.serve_websocket(request, self._on_text)

    def _on_text(self, conn: Connection, text: str) -> None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            self._send_error(
                conn, None, _Refused(3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}")
            )
            return
        request_id = message.get("id") if isinstance(message, dict) else None
        try:
            result = self._answer(conn, message)
        except _Refused as refused:
            self._send_error(conn, request_id if _is_request_id(request_id) else None, refused)
            return
        conn.send(_json({"result": result, "id": request_id}))

    def _answer(self, conn: Connection, message: Any) -> list[str] | None:
        if not isinstance(message, dict) or not _is_request_id(message.get("id")):
            raise _Refused(2, "Invalid request: request ID must be an unsigned integer")
        method = message.get("method")
        if method == "LIST_SUBSCRIPTIONS":
            return sorted(conn.topics)
        if method not in METHODS:
            raise _Refused(2, f"Invalid request: unknown variant {method}, expected one of {', '.join(METHODS)}")
        streams = message.get("params")
        if not isinstance(streams, list) or not all(self._is_stream(stream) for stream in streams):
            raise _Refused(2, "Invalid request: invalid stream")
        for stream in streams:
            if method == "SUBSCRIBE":
                self.subscribe(conn, stream)
            else:
                self.unsubscribe(conn, stream)
        return None

    def _is_stream(self, stream: Any) -> bool:
        if not isinstance(stream, str):
            return False
        market, _, channel = stream.partition("@")
        return channel in CHANNELS and market in {stream_id(symbol) for symbol in self.books}

    @staticmethod
    def _send_error(conn: Connection, request_id: int | None, refused: _Refused) -> None:
        conn.send(_json({"error": {"code": refused.code, "msg": refused.msg}, "id": request_id}))
