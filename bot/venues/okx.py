"""A local venue that speaks OKX's public v5 websocket order-book protocol.

Enough of it that an unmodified ccxt.pro `okx` client connects by URL override alone:
`{"op":"subscribe"}` acknowledged per argument, `books` snapshot (`prevSeqId` -1) then updates whose
`prevSeqId` is the previous `seqId`, OKX's CRC32 `checksum` over the top 25 levels, and the text
`ping` → `pong` keep-alive. Prices and sizes go out as decimal strings, as OKX sends them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from bot.events import Level

log = logging.getLogger(__name__)

BOOK_CHANNEL = "books"
CHECKSUM_LEVELS = 25

BookListener = Callable[[str, int, tuple[Level, ...], tuple[Level, ...]], None]
"""Called with (symbol, ts, bids, asks) for every book state the server sends."""


@dataclass(frozen=True, slots=True)
class Instrument:
    """A spot instrument as the venue lists it."""

    symbol: str
    tick_size: float
    lot_size: float
    min_size: float

    @property
    def inst_id(self) -> str:
        return self.symbol.replace("/", "-")

    def price_text(self, price: float) -> str:
        return _decimal_text(price, self.tick_size)

    def size_text(self, size: float) -> str:
        return _decimal_text(size, self.lot_size)


def _decimals(step: float) -> int:
    text = f"{step:.12f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def _decimal_text(value: float, step: float) -> str:
    return f"{value:.{_decimals(step)}f}"


def instrument_row(instrument: Instrument) -> dict[str, str]:
    """The instrument as a row of OKX's `GET /api/v5/public/instruments?instType=SPOT` response."""
    base, quote = instrument.symbol.split("/")
    return {
        "alias": "",
        "baseCcy": base,
        "category": "1",
        "ctMult": "",
        "ctType": "",
        "ctVal": "",
        "ctValCcy": "",
        "expTime": "",
        "instFamily": "",
        "instId": instrument.inst_id,
        "instType": "SPOT",
        "lever": "10",
        "listTime": "1548133413000",
        "lotSz": _decimal_text(instrument.lot_size, instrument.lot_size),
        "maxLmtSz": "9999999999",
        "maxMktSz": "1000000",
        "minSz": _decimal_text(instrument.min_size, instrument.lot_size),
        "quoteCcy": quote,
        "settleCcy": "",
        "state": "live",
        "stk": "",
        "tickSz": _decimal_text(instrument.tick_size, instrument.tick_size),
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


class _Connection:
    """One client connection; a single writer task keeps its frames in order."""

    def __init__(self, ws: web.WebSocketResponse, conn_id: str, max_queue: int) -> None:
        self.ws = ws
        self.conn_id = conn_id
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(max_queue)
        self._writer = asyncio.create_task(self._write(), name=f"okx-venue-writer-{conn_id}")
        self.sent = 0

    def send(self, text: str) -> None:
        """Queue a frame; a client too slow to keep up is disconnected, as real venues do."""
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("okx venue: connection %s too slow, closing it", self.conn_id)
            self._writer.cancel()
            asyncio.get_running_loop().create_task(self.ws.close())

    async def _write(self) -> None:
        while (text := await self._queue.get()) is not None:
            try:
                await self.ws.send_str(text)
            except ConnectionError:
                return
            self.sent += 1

    async def close(self) -> None:
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        await self.ws.close()


@dataclass(slots=True)
class _Book:
    instrument: Instrument
    seq_id: int = 0
    ts: int = 0
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    subscribers: set[_Connection] = field(default_factory=set)

    def sorted_side(self, side: dict[str, str], descending: bool) -> list[list[str]]:
        ordered = sorted(side.items(), key=lambda item: float(item[0]), reverse=descending)
        return [[price, size, "0", "1"] for price, size in ordered]

    def frame(self, action: str, bids: list[list[str]], asks: list[list[str]], prev_seq_id: int) -> str:
        full_bids = self.sorted_side(self.bids, descending=True)
        full_asks = self.sorted_side(self.asks, descending=False)
        data = {
            "asks": asks,
            "bids": bids,
            "ts": str(self.ts),
            "checksum": okx_checksum(full_bids, full_asks),
            "prevSeqId": prev_seq_id,
            "seqId": self.seq_id,
        }
        arg = {"channel": BOOK_CHANNEL, "instId": self.instrument.inst_id}
        return orjson.dumps({"arg": arg, "action": action, "data": [data]}).decode()

    def snapshot(self) -> str:
        bids = self.sorted_side(self.bids, descending=True)
        return self.frame("snapshot", bids, self.sorted_side(self.asks, descending=False), -1)


def _diff(old: dict[str, str], new: dict[str, str]) -> list[list[str]]:
    changes = [[price, size, "0", "1"] for price, size in new.items() if old.get(price) != size]
    changes.extend([price, "0", "0", "0"] for price in old if price not in new)
    return changes


class OkxVenueServer:
    """One simulated venue on 127.0.0.1, speaking OKX's public websocket protocol."""

    def __init__(
        self,
        name: str,
        instruments: Sequence[Instrument],
        host: str = "127.0.0.1",
        port: int = 0,
        max_queue: int = 10_000,
    ) -> None:
        self.name = name
        self._max_queue = max_queue
        self._host = host
        self._port = port
        self._books = {inst.inst_id: _Book(inst) for inst in instruments}
        self._by_symbol = {inst.symbol: inst.inst_id for inst in instruments}
        self._connections: set[_Connection] = set()
        self._conn_ids = itertools.count(1)
        self._listeners: list[BookListener] = []
        self._runner: web.AppRunner | None = None

    @property
    def instruments(self) -> list[Instrument]:
        return [book.instrument for book in self._books.values()]

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError(f"venue server {self.name} is not running")
        port: int = self._runner.addresses[0][1]
        return port

    @property
    def ws_url(self) -> str:
        """The value for ccxt's `urls['api']['ws']` (ccxt appends `/public`)."""
        return f"ws://{self._host}:{self.port}/ws/v5"

    def add_listener(self, listener: BookListener) -> None:
        """Call `listener` with every book state this server sends."""
        self._listeners.append(listener)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws/v5/public", self._handle_ws)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        log.info("venue %s (okx protocol) listening on %s", self.name, self.ws_url)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def frames_sent(self) -> int:
        return sum(conn.sent for conn in self._connections)

    async def stop(self) -> None:
        for conn in list(self._connections):
            await conn.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def book_state(self, symbol: str) -> tuple[int, tuple[Level, ...], tuple[Level, ...]]:
        """(seqId, bids, asks) as last sent for `symbol`."""
        book = self._books[self._by_symbol[symbol]]
        bids = tuple((float(p), float(s)) for p, s, _, _ in book.sorted_side(book.bids, descending=True))
        asks = tuple((float(p), float(s)) for p, s, _, _ in book.sorted_side(book.asks, descending=False))
        return book.seq_id, bids, asks

    def publish_book(self, symbol: str, ts: int, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        """Make (bids, asks) the venue's book for `symbol` at `ts` and queue the update to subscribers."""
        book = self._books[self._by_symbol[symbol]]
        inst = book.instrument
        new_bids = {inst.price_text(p): inst.size_text(s) for p, s in bids}
        new_asks = {inst.price_text(p): inst.size_text(s) for p, s in asks}
        bid_changes, ask_changes = _diff(book.bids, new_bids), _diff(book.asks, new_asks)
        if not bid_changes and not ask_changes and book.seq_id:
            return
        prev_seq_id = book.seq_id
        book.seq_id += 1
        book.ts = ts
        book.bids, book.asks = new_bids, new_asks
        if self._listeners:
            _, sent_bids, sent_asks = self.book_state(symbol)
            for listener in self._listeners:
                listener(symbol, ts, sent_bids, sent_asks)
        if book.subscribers:
            # Clients that subscribed before the first book get it as their snapshot.
            frame = book.snapshot() if prev_seq_id == 0 else book.frame("update", bid_changes, ask_changes, prev_seq_id)
            for conn in book.subscribers:
                conn.send(frame)

    async def _handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _Connection(ws, f"{next(self._conn_ids):08x}", self._max_queue)
        self._connections.add(conn)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if msg.data == "ping":
                    conn.send("pong")
                    continue
                self._handle_request(conn, msg.data)
        finally:
            self._connections.discard(conn)
            for book in self._books.values():
                book.subscribers.discard(conn)
            await conn.close()
        return ws

    def _handle_request(self, conn: _Connection, text: str) -> None:
        try:
            request = orjson.loads(text)
            op, args = request["op"], request["args"]
            if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
                raise ValueError(op)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self._send_error(conn, "60012", f"Illegal request: {text}")
            return
        for arg in args:
            self._handle_arg(conn, op, arg)

    def _handle_arg(self, conn: _Connection, op: str, arg: Any) -> None:
        channel = arg.get("channel") if isinstance(arg, dict) else None
        inst_id = arg.get("instId") if isinstance(arg, dict) else None
        book = self._books.get(inst_id) if isinstance(inst_id, str) else None
        if channel != BOOK_CHANNEL or book is None:
            self._send_error(conn, "60018", f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist")
            return
        ack = {"event": op, "arg": {"channel": channel, "instId": inst_id}, "connId": conn.conn_id}
        conn.send(orjson.dumps(ack).decode())
        if op == "unsubscribe":
            book.subscribers.discard(conn)
            return
        book.subscribers.add(conn)
        if book.seq_id:
            conn.send(book.snapshot())

    @staticmethod
    def _send_error(conn: _Connection, code: str, msg: str) -> None:
        conn.send(orjson.dumps({"event": "error", "code": code, "msg": msg, "connId": conn.conn_id}).decode())


async def start_servers(servers: Sequence[OkxVenueServer]) -> None:
    """Start several venue servers concurrently."""
    await asyncio.gather(*(server.start() for server in servers))
