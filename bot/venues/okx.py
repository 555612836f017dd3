"""A local venue that speaks OKX's public v5 websocket protocol.

Enough of it that an unmodified ccxt.pro `okx` client connects by URL override alone:
`{"op":"subscribe"}` acknowledged per argument; `books` snapshot (`prevSeqId` -1) then updates whose
`prevSeqId` is the previous `seqId`, with OKX's CRC32 `checksum` over the top 25 levels; `bbo-tbt`
(top of book on every change); `trades`; the text `ping` → `pong` keep-alive. Prices and sizes go out
as decimal strings, as OKX sends them.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from bot.venues.base import Change, Connection, Instrument, ServerBook, VenueServer, decimal_text

BOOKS = "books"
BBO = "bbo-tbt"
TRADES = "trades"
CHANNELS = frozenset({BOOKS, BBO, TRADES})
CHECKSUM_LEVELS = 25


def inst_id(symbol: str) -> str:
    return symbol.replace("/", "-")


def instrument_row(instrument: Instrument) -> dict[str, str]:
    """The instrument as a row of OKX's `GET /api/v5/public/instruments?instType=SPOT` response."""
    return {
        "alias": "",
        "baseCcy": instrument.base,
        "category": "1",
        "ctMult": "",
        "ctType": "",
        "ctVal": "",
        "ctValCcy": "",
        "expTime": "",
        "instFamily": "",
        "instId": inst_id(instrument.symbol),
        "instType": "SPOT",
        "lever": "10",
        "listTime": "1548133413000",
        "lotSz": decimal_text(instrument.lot_size, instrument.lot_size),
        "maxLmtSz": "9999999999",
        "maxMktSz": "1000000",
        "minSz": decimal_text(instrument.min_size, instrument.lot_size),
        "quoteCcy": instrument.quote,
        "settleCcy": "",
        "state": "live",
        "stk": "",
        "tickSz": decimal_text(instrument.tick_size, instrument.tick_size),
        "uly": "",
    }


def okx_checksum(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """OKX's book checksum: CRC32 (signed) of `bid:size:ask:size:…` over the top 25 levels."""
    parts: list[str] = []
    for i in range(CHECKSUM_LEVELS):
        if i < len(bids):
            parts.extend((bids[i][0], bids[i][1]))
        if i < len(asks):
            parts.extend((asks[i][0], asks[i][1]))
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def _levels(changes: Sequence[Change]) -> list[list[str]]:
    return [[price, size, "0", "0" if size == "0" else "1"] for price, size in changes]


class OkxVenueServer(VenueServer):
    """One simulated venue speaking OKX's public websocket protocol."""

    protocol = "okx"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/ws/v5/public", self._handle_ws)

    def ccxt_urls(self) -> dict[str, Any]:
        return {"ws": f"{self.ws_url}/ws/v5"}  # ccxt appends /public

    def market_rows(self) -> list[dict[str, Any]]:
        return [instrument_row(inst) for inst in self.instruments]

    def book_frames(
        self, book: ServerBook, bids: list[Change], asks: list[Change], prev_id: int
    ) -> list[tuple[str, str]]:
        symbol = book.instrument.symbol
        frames = [
            (
                f"{BOOKS}:{symbol}",
                self._books_frame(book, "snapshot" if prev_id == 0 else "update", bids, asks, prev_id),
            )
        ]
        sorted_bids, sorted_asks = book.sorted_bids(), book.sorted_asks()
        if sorted_bids and sorted_asks:
            data = {"asks": _levels(sorted_asks[:1]), "bids": _levels(sorted_bids[:1]), "ts": str(book.ts)}
            frames.append((f"{BBO}:{symbol}", self._frame(BBO, symbol, None, data)))
        return frames

    def trade_frames(
        self, book: ServerBook, trade_id: int, ts: int, price: float, size: float, side: str
    ) -> list[tuple[str, str]]:
        inst = book.instrument
        data = {
            "instId": inst_id(inst.symbol),
            "tradeId": str(trade_id),
            "px": inst.price_text(price),
            "sz": inst.size_text(size),
            "side": side,
            "ts": str(ts),
            "count": "1",
        }
        return [(f"{TRADES}:{inst.symbol}", self._frame(TRADES, inst.symbol, None, data))]

    def _books_frame(self, book: ServerBook, action: str, bids: list[Change], asks: list[Change], prev_id: int) -> str:
        data = {
            "asks": _levels(asks),
            "bids": _levels(bids),
            "ts": str(book.ts),
            "checksum": okx_checksum(book.sorted_bids(), book.sorted_asks()),
            "prevSeqId": -1 if action == "snapshot" else prev_id,
            "seqId": book.update_id,
        }
        return self._frame(BOOKS, book.instrument.symbol, action, data)

    @staticmethod
    def _frame(channel: str, symbol: str, action: str | None, data: dict[str, Any]) -> str:
        message: dict[str, Any] = {"arg": {"channel": channel, "instId": inst_id(symbol)}}
        if action is not None:
            message["action"] = action
        message["data"] = [data]
        return orjson.dumps(message).decode()

    async def _handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        return await self.serve_websocket(request, self._on_text)

    def _on_text(self, conn: Connection, text: str) -> None:
        if text == "ping":
            conn.send("pong")
            return
        try:
            request = orjson.loads(text)
            op, args = request["op"], request["args"]
            if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
                raise ValueError(op)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self._send_error(conn, "60012", f"Illegal request: {text}")
            return
        for arg in args:
            self._on_arg(conn, op, arg)

    def _on_arg(self, conn: Connection, op: str, arg: Any) -> None:
        channel = arg.get("channel") if isinstance(arg, dict) else None
        instrument = arg.get("instId") if isinstance(arg, dict) else None
        symbol = instrument.replace("-", "/") if isinstance(instrument, str) else ""
        if channel not in CHANNELS or symbol not in self.books:
            self._send_error(conn, "60018", f"Wrong URL or channel:{channel},instId:{instrument} doesn't exist")
            return
        ack = {"event": op, "arg": {"channel": channel, "instId": instrument}, "connId": conn.conn_id}
        conn.send(orjson.dumps(ack).decode())
        topic = f"{channel}:{symbol}"
        if op == "unsubscribe":
            self.unsubscribe(conn, topic)
            return
        self.subscribe(conn, topic)
        book = self.books[symbol]
        if channel == BOOKS and book.update_id:
            if self.take_snapshot_failure():
                self._send_error(conn, "50001", "Service temporarily unavailable, please try again later")
                return
            conn.send(self._books_frame(book, "snapshot", book.sorted_bids(), book.sorted_asks(), -1))

    @staticmethod
    def _send_error(conn: Connection, code: str, msg: str) -> None:
        conn.send(orjson.dumps({"event": "error", "code": code, "msg": msg, "connId": conn.conn_id}).decode())
