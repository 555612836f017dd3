"""What every local venue server shares, whatever wire protocol it speaks.

A protocol subclass supplies its routes, frame formats, market rows and the URL overrides ccxt needs;
this base owns connections (one ordered writer each), the books (decimal strings, as venues send them),
topic subscriptions, listeners and the fault switches used by tests and `arbbot demo --faults`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from aiohttp import WSMsgType, web

from bot.events import Level
from bot.tasks import cancel_and_wait

log = logging.getLogger(__name__)

BookListener = Callable[[str, int, tuple[Level, ...], tuple[Level, ...]], None]
"""Called with (symbol, ts, bids, asks) for every book state the server makes current."""

Change = tuple[str, str]
"""A level change as sent on the wire: (price, size); size "0" removes the level."""


class Fault(StrEnum):
    """Server-side faults, by the names `arbbot demo --faults` takes."""

    DROP = "drop"  # close every connection cleanly
    RESET = "reset"  # abort every connection (no close handshake)
    STALL = "stall"  # keep connections open but send nothing, not even pongs
    GAP = "gap"  # skip one book update: a sequence gap
    DUPLICATE = "duplicate"  # send one book update twice
    REORDER = "reorder"  # swap two consecutive book updates
    MALFORMED = "malformed"  # send a frame that is not valid JSON
    CROSSED = "crossed"  # put a bid above the best ask
    NAN = "nan"  # put a NaN size in the book
    SNAPSHOT_FAIL = "snapshot_fail"  # fail the next snapshot request


FRAME_FAULTS = frozenset({Fault.GAP, Fault.DUPLICATE, Fault.REORDER, Fault.MALFORMED})
BOOK_FAULTS = frozenset({Fault.CROSSED, Fault.NAN})


@dataclass(frozen=True, slots=True)
class Instrument:
    """A spot instrument as the venue lists it."""

    symbol: str
    tick_size: float
    lot_size: float
    min_size: float

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]

    def price_text(self, price: float) -> str:
        return decimal_text(price, self.tick_size)

    def size_text(self, size: float) -> str:
        return decimal_text(size, self.lot_size)


def decimal_places(step: float) -> int:
    text = f"{step:.12f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def decimal_text(value: float, step: float) -> str:
    """`value` with as many decimals as `step` has."""
    return f"{value:.{decimal_places(step)}f}"


class Connection:
    """One client connection; a single writer task keeps its frames in order."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, conn_id: str, max_queue: int) -> None:
        self.ws = ws
        self.conn_id = conn_id
        self.topics: set[str] = set()
        self.sent = 0
        self.stalled = False
        self._transport = request.transport
        self._queue: asyncio.Queue[tuple[str, Callable[[], None] | None]] = asyncio.Queue(max_queue)
        self._writer = asyncio.get_running_loop().create_task(self._write(), name=f"venue-writer-{conn_id}")

    def send(self, text: str, on_sent: Callable[[], None] | None = None) -> None:
        """Queue a frame; a stalled connection swallows it; a client too slow to keep up is disconnected.

        `on_sent` is called once the frame has been written to the socket.
        """
        if self.stalled:
            return
        try:
            self._queue.put_nowait((text, on_sent))
        except asyncio.QueueFull:
            log.warning("venue connection %s too slow, closing it", self.conn_id)
            self.abort()

    async def _write(self) -> None:
        while True:
            text, on_sent = await self._queue.get()
            try:
                await self.ws.send_str(text)
            except ConnectionError:
                return
            self.sent += 1
            if on_sent is not None:
                on_sent()

    def abort(self) -> None:
        """Drop the TCP connection without a websocket close handshake."""
        self._writer.cancel()
        if self._transport is not None:
            self._transport.abort()

    async def close(self) -> None:
        await cancel_and_wait(self._writer)
        await self.ws.close()


@dataclass(slots=True)
class ServerBook:
    """The venue's book for one instrument, as the decimal strings it sends."""

    instrument: Instrument
    update_id: int = 0
    ts: int = 0
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)

    def sorted_bids(self) -> list[tuple[str, str]]:
        return sorted(self.bids.items(), key=lambda level: float(level[0]), reverse=True)

    def sorted_asks(self) -> list[tuple[str, str]]:
        return sorted(self.asks.items(), key=lambda level: float(level[0]))

    def replace(self, bids: dict[str, str], asks: dict[str, str]) -> tuple[list[Change], list[Change]]:
        """Make (bids, asks) current; return the changes from the previous state."""
        changes = _diff(self.bids, bids), _diff(self.asks, asks)
        self.bids, self.asks = bids, asks
        return changes

    def levels(self) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        bids = tuple((float(p), float(s)) for p, s in self.sorted_bids())
        asks = tuple((float(p), float(s)) for p, s in self.sorted_asks())
        return bids, asks


def _diff(old: dict[str, str], new: dict[str, str]) -> list[Change]:
    changes = [(price, size) for price, size in new.items() if old.get(price) != size]
    changes.extend((price, "0") for price in old if price not in new)
    return changes


class VenueServer(ABC):
    """A local venue on 127.0.0.1 that a real ccxt.pro client reaches by URL override alone."""

    protocol: ClassVar[str]
    """The ccxt exchange id whose wire protocol this server speaks."""
    markets_from_rows: ClassVar[bool] = True
    """Whether ccxt takes this venue's markets from `market_rows()` (else it loads them over the local REST API)."""

    def __init__(
        self,
        name: str,
        instruments: Sequence[Instrument],
        host: str = "127.0.0.1",
        port: int = 0,
        max_queue: int = 10_000,
        stall_s: float = 3.0,
    ) -> None:
        self.name = name
        self.books = {inst.symbol: ServerBook(inst) for inst in instruments}
        self.fault_counts: Counter[str] = Counter()
        self.stall_s = stall_s
        self._host = host
        self._port = port
        self._max_queue = max_queue
        self._connections: set[Connection] = set()
        self._subscribers: dict[str, set[Connection]] = {}
        self._conn_ids = itertools.count(1)
        self._listeners: list[BookListener] = []
        self._pending: Counter[Fault] = Counter()
        self._held: dict[str, str] = {}
        self._trade_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- what a protocol provides -------------------------------------------------------------

    @abstractmethod
    def add_routes(self, app: web.Application) -> None:
        """Register the protocol's websocket (and REST) routes."""

    @abstractmethod
    def ccxt_urls(self) -> dict[str, Any]:
        """Overrides for the ccxt exchange's `urls['api']`, pointing it at this server."""

    @abstractmethod
    def market_rows(self) -> list[dict[str, Any]]:
        """The instruments as the venue's REST API lists them (ccxt `parse_markets` input)."""

    @abstractmethod
    def book_frames(
        self, book: ServerBook, bids: list[Change], asks: list[Change], prev_id: int
    ) -> list[tuple[str, str]]:
        """(topic, text) frames announcing a book change from update `prev_id` to `book.update_id`."""

    @abstractmethod
    def trade_frames(
        self, book: ServerBook, trade_id: int, ts: int, price: float, size: float, side: str
    ) -> list[tuple[str, str]]:
        """(topic, text) frames announcing one trade."""

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def instruments(self) -> list[Instrument]:
        return [book.instrument for book in self.books.values()]

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError(f"venue server {self.name} is not running")
        port: int = self._runner.addresses[0][1]
        return port

    @property
    def http_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._host}:{self.port}"

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def frames_sent(self) -> int:
        return sum(conn.sent for conn in self._connections)

    async def start(self) -> None:
        app = web.Application()
        self.add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, reuse_address=True).start()
        log.info("venue %s (%s protocol) listening on %s", self.name, self.protocol, self.http_url)

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        for conn in list(self._connections):
            await conn.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def add_listener(self, listener: BookListener) -> None:
        """Call `listener` with every book state this server makes current."""
        self._listeners.append(listener)

    # --- market data --------------------------------------------------------------------------

    def book_state(self, symbol: str) -> tuple[int, tuple[Level, ...], tuple[Level, ...]]:
        """(update id, bids, asks) as last made current for `symbol`."""
        book = self.books[symbol]
        bids, asks = book.levels()
        return book.update_id, bids, asks

    def publish_book(
        self,
        symbol: str,
        ts: int,
        bids: Sequence[Level],
        asks: Sequence[Level],
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        """Make (bids, asks) the venue's book for `symbol` at `ts` and send the change to subscribers; `on_sent` is
        called each time a connection has written the change's frame (not for frames a fault replaced)."""
        book = self.books[symbol]
        inst = book.instrument
        new_bids = {inst.price_text(p): inst.size_text(s) for p, s in bids}
        new_asks = {inst.price_text(p): inst.size_text(s) for p, s in asks}
        self._poison(book, new_bids, new_asks)
        bid_changes, ask_changes = book.replace(new_bids, new_asks)
        if not bid_changes and not ask_changes and book.update_id:
            return
        prev_id = book.update_id
        book.update_id += 1
        book.ts = ts
        if self._listeners:
            sent_bids, sent_asks = book.levels()
            for listener in self._listeners:
                listener(symbol, ts, sent_bids, sent_asks)
        for topic, text in self.book_frames(book, bid_changes, ask_changes, prev_id):
            self._broadcast_book_frame(topic, text, on_sent)

    def publish_trade(self, symbol: str, ts: int, price: float, size: float, side: str) -> None:
        """Send one public trade (`side` is the taker's) to subscribers."""
        book = self.books[symbol]
        for topic, text in self.trade_frames(book, next(self._trade_ids), ts, price, size, side):
            self.broadcast(topic, text)

    # --- subscriptions and sending ------------------------------------------------------------

    def subscribe(self, conn: Connection, topic: str) -> None:
        conn.topics.add(topic)
        self._subscribers.setdefault(topic, set()).add(conn)

    def unsubscribe(self, conn: Connection, topic: str) -> None:
        conn.topics.discard(topic)
        self._subscribers.get(topic, set()).discard(conn)

    def broadcast(self, topic: str, text: str, on_sent: Callable[[], None] | None = None) -> None:
        for conn in self._subscribers.get(topic, ()):
            conn.send(text, on_sent)

    def _broadcast_book_frame(self, topic: str, text: str, on_sent: Callable[[], None] | None = None) -> None:
        if not self._subscribers.get(topic):
            return
        held = self._held.pop(topic, None)
        fault = self._take_frame_fault()
        if fault is Fault.GAP:
            text = ""
        elif fault is Fault.DUPLICATE:
            self.broadcast(topic, text)
        elif fault is Fault.REORDER:
            self._held[topic] = text
            text = ""
        elif fault is Fault.MALFORMED:
            self.broadcast(topic, text[: len(text) // 2])
        if text:
            self.broadcast(topic, text, on_sent)
        if held is not None:
            self.broadcast(topic, held)

    async def serve_websocket(
        self, request: web.Request, on_text: Callable[[Connection, str], None]
    ) -> web.WebSocketResponse:
        """Accept a websocket and hand each text frame to `on_text` until the client leaves."""
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = Connection(ws, request, f"{next(self._conn_ids):08x}", self._max_queue)
        self._connections.add(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and not conn.stalled:
                    on_text(conn, msg.data)
        finally:
            self._connections.discard(conn)
            for topic in list(conn.topics):
                self.unsubscribe(conn, topic)
            await conn.close()
        return ws

    # --- faults -------------------------------------------------------------------------------

    def inject(self, fault: Fault | str) -> None:
        """Fire one fault now (connection faults) or on the next book update (frame and book faults)."""
        kind = Fault(fault)
        self.fault_counts[kind.value] += 1
        if kind is Fault.DROP:
            for conn in list(self._connections):
                self._spawn(conn.close())
        elif kind is Fault.RESET:
            for conn in list(self._connections):
                conn.abort()
        elif kind is Fault.STALL:
            self._stall(list(self._connections))
        else:
            self._pending[kind] += 1

    def take_snapshot_failure(self) -> bool:
        """True (once per injected `snapshot_fail`) when the protocol should fail this snapshot."""
        if self._pending[Fault.SNAPSHOT_FAIL] > 0:
            self._pending[Fault.SNAPSHOT_FAIL] -= 1
            return True
        return False

    def _take_frame_fault(self) -> Fault | None:
        for kind in FRAME_FAULTS:
            if self._pending[kind] > 0:
                self._pending[kind] -= 1
                return kind
        return None

    def _poison(self, book: ServerBook, bids: dict[str, str], asks: dict[str, str]) -> None:
        if not bids or not asks:
            return
        inst = book.instrument
        if self._pending[Fault.CROSSED] > 0:
            self._pending[Fault.CROSSED] -= 1
            best_ask = min(float(p) for p in asks)
            bids[inst.price_text(best_ask + 2 * inst.tick_size)] = inst.size_text(inst.lot_size * 10)
        if self._pending[Fault.NAN] > 0:
            self._pending[Fault.NAN] -= 1
            bids[max(bids, key=float)] = "NaN"

    def _stall(self, connections: list[Connection]) -> None:
        for conn in connections:
            conn.stalled = True

        async def resume() -> None:
            await asyncio.sleep(self.stall_s)
            for conn in connections:
                conn.stalled = False

        self._spawn(resume())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"venue-{self.name}-fault")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
