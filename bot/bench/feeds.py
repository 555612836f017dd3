"""Feeds benchmark (`arbbot bench feeds`): what arbbot's feed and engine cost on top of ccxt.pro.

Everything runs single-threaded in one process and is timed with `time.perf_counter_ns`:

- `ccxt_per_s`, the reference: ccxt.pro's own rate on one protocol's book frames. Real frames are captured first
  from the local venue server over a raw websocket; then, with no network, a real ccxt.pro exchange whose client
  believes it is subscribed takes them through `Client.handle_message` (ccxt's JSON parse and book handler).
- `pipeline_per_s`: the same frames through ccxt and then arbbot as the live feed takes them: copy the top 20
  levels, validate a `BookEvent`, update feed health, and `SignalEngine.on_event` (market state, `cex_cex`
  against a second venue's book of the symbol, rule scorer, opportunity tracker). `ratio` = pipeline / ccxt.
- `scaling`: µs per book update through `SignalEngine.on_event` alone, for growing venue and symbol counts.
- `model_scorer` (only when a model folder is given): the same pipeline passes and scaling points with the live
  model scorer (`scorer.model_dir` set: the feature tracker on every event and evaluation, the LSTM on every
  tradeable one), timed in the same run, alternating with the rule scorer's passes.

Neither path includes the socket read nor the event-loop hop from ccxt's resolved future to the feed's watch
loop: both would add the same cost to each side.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMessage, WSMsgType

from bot.bench.machine import cpu_model
from bot.bench.stack import MODEL_AGE_H
from bot.clock import SystemClock
from bot.config import (
    CexCexConfig,
    RuleScorerConfig,
    ScorerConfig,
    SimSymbolConfig,
    SimulatorConfig,
    SimVenueConfig,
)
from bot.engine import SignalEngine
from bot.events import BookEvent, Level
from bot.feeds.ccxt_adapter import BookCopy, CcxtProClient, _copy
from bot.feeds.cex import CexVenueFeed
from bot.feeds.health import FeedHealth
from bot.market_state import Freshness
from bot.messages import Signal
from bot.model.features import FeatureTracker
from bot.model.file import ModelFile
from bot.model.predict import predict
from bot.rejections import RejectionCounter
from bot.scoring.base import Scorer
from bot.scoring.model import ModelScorer
from bot.scoring.rule import RuleScorer
from bot.sim.market import MarketSimulator
from bot.venues.base import Instrument, VenueServer
from bot.venues.registry import server_class
from strategies.cex_cex import CexCexStrategy

PROTOCOLS = ("okx", "bybit", "binance")
SCALING_POINTS = ((2, 1), (3, 5), (3, 20), (5, 20), (10, 20), (10, 50))
"""(venues, symbols); 3 × 20 answers "3 venues × 20 symbols in one process without falling behind"."""

SYMBOL = "BTC/USDT"
INSTRUMENT = Instrument(SYMBOL, tick_size=0.1, lot_size=0.00001, min_size=0.00001)
BENCH = "bench"  # the venue whose frames are measured
PEER = "peer"  # a second venue of the symbol, so that cex_cex evaluates a pair on every update
FEES_BPS = {BENCH: 2.0, PEER: 3.0}
DEPTH = 20  # levels per side the feed copies (the demo's book_depth)
WIRE_LEVELS = 25  # levels per side the venue server holds: OKX's checksum window
# Levels per side requoted on each update; deeper levels stay as they were. The simulator requotes its whole book
# every tick (~100 level changes per frame), far more than real venues send: recorded BTC-USDT sessions in
# ../shared/data/real average 36 changes per Binance depth@100ms frame (median 16), 25 per OKX books update
# (median 19) and 9 per Bybit orderbook delta (median 5). ccxt's cost per frame grows with its changes and
# arbbot's per update does not, so frames of the simulator's size would flatter the ratio (REQUOTED_LEVELS =
# WIRE_LEVELS publishes the simulator's books as they are: ~100 changes per frame).
REQUOTED_LEVELS = 5
TICK_MS = 50
STALE_AFTER_MS = 600_000  # books built before a timed pass must not go stale during it
CHUNK_TICKS = 250  # publishes between two catch-ups of the raw client, far below the server's queue bound
CATCH_UP_S = 30.0
SYNC_TRIES = 1_000


@dataclass(frozen=True, slots=True)
class _Sizes:
    frames: int  # book updates published per protocol
    repeats: int  # timed passes over the frames, ccxt and pipeline alternating; the median is kept
    updates: int  # timed updates per scaling point
    warmup: int  # untimed updates before them
    engine_repeats: int  # timed passes per scaling point, each with a fresh engine; the median is kept


FULL = _Sizes(frames=3_000, repeats=5, updates=20_000, warmup=1_000, engine_repeats=3)
QUICK = _Sizes(frames=400, repeats=2, updates=2_000, warmup=500, engine_repeats=1)


@dataclass(frozen=True, slots=True)
class ProtocolEvidence:
    """What one protocol's run left behind, to check that ccxt really parsed complete, real frames."""

    frames: int
    server_book: tuple[int, tuple[Level, ...], tuple[Level, ...]]
    """(update id, bids, asks) the server made current last."""
    ccxt_book: BookCopy
    """ccxt's whole book after the last reference pass."""
    pipeline_book: BookCopy
    """ccxt's whole book after the last pipeline pass."""
    engine_updates: int
    """Book events the engine applied in the last pipeline pass."""
    rejections: int


@dataclass(frozen=True, slots=True)
class _Wire:
    """How a raw websocket client subscribes to a protocol's book stream and reads its frames."""

    path: str
    subscribe: dict[str, Any]
    is_book: Callable[[dict[str, Any]], bool]
    update_id: Callable[[dict[str, Any]], int]
    changes: Callable[[dict[str, Any]], int]


# The streams ccxt.pro's watch_order_book(symbol) subscribes to, with no limit given (as the feed calls it).
_WIRES = {
    "okx": _Wire(
        "/ws/v5/public",
        {"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]},
        lambda m: m.get("arg", {}).get("channel") == "books" and "data" in m,
        lambda m: int(m["data"][0]["seqId"]),
        lambda m: len(m["data"][0]["bids"]) + len(m["data"][0]["asks"]),
    ),
    "bybit": _Wire(
        "/v5/public/spot",
        {"op": "subscribe", "req_id": "1", "args": ["orderbook.50.BTCUSDT"]},
        lambda m: m.get("topic") == "orderbook.50.BTCUSDT",
        lambda m: int(m["data"]["u"]),
        lambda m: len(m["data"]["b"]) + len(m["data"]["a"]),
    ),
    "binance": _Wire(
        "/ws",
        {"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 1},
        lambda m: m.get("e") == "depthUpdate",
        lambda m: int(m["u"]),
        lambda m: len(m["b"]) + len(m["a"]),
    ),
}


@dataclass(frozen=True, slots=True)
class _Capture:
    """One protocol's frames as the server sent them, and what is needed to replay them into ccxt."""

    protocol: str
    urls: dict[str, Any]
    rows: list[dict[str, Any]] | None
    markets: tuple[Any, Any]  # ccxt's (markets, currencies), loaded once from the server
    priming: tuple[WSMessage, ...]  # frames before the first book frame: subscribe acknowledgements
    frames: tuple[WSMessage, ...]  # the book frames, in order
    peers: tuple[BookEvent, ...]  # the peer venue's book at each frame's tick
    snapshot: dict[str, Any] | None  # Binance's REST depth snapshot, taken right after subscribing
    server_book: tuple[int, tuple[Level, ...], tuple[Level, ...]]
    changes_per_frame: float


def run_feeds_bench(
    quick: bool = False, *, evidence: dict[str, ProtocolEvidence] | None = None, model_dir: Path | None = None
) -> dict[str, Any]:
    """Run the feeds benchmark in an event loop of its own and return the JSON-ready result.

    `evidence`, when given, receives each protocol's final books, to check the run against the venue server.
    `model_dir` adds the model scorer's passes and scaling points (`model_scorer`), timed in the same run.
    """
    return asyncio.run(measure_feeds(quick, evidence=evidence, model_dir=model_dir))


async def measure_feeds(
    quick: bool = False, *, evidence: dict[str, ProtocolEvidence] | None = None, model_dir: Path | None = None
) -> dict[str, Any]:
    """`run_feeds_bench` in the running event loop."""
    sizes = QUICK if quick else FULL
    evidence = evidence if evidence is not None else {}
    machine = _machine()  # before the run: its load average says whether other work shared the machine
    captures = [await _capture(protocol, sizes.frames) for protocol in PROTOCOLS]
    protocols = {}
    model_protocols = {}
    for capture in captures:
        row, model_row = await _measure_protocol(capture, sizes.repeats, evidence, model_dir)
        protocols[capture.protocol] = row
        if model_row is not None:
            model_protocols[capture.protocol] = model_row
    points = [_scaling_point(venues, symbols, sizes, model_dir) for venues, symbols in SCALING_POINTS]
    scaling = [rule for rule, _ in points]
    result = {
        "benchmark": "feeds",
        "quick": quick,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "protocols": protocols,
        "scaling": scaling,
        "one_process_3x20": _one_process(protocols, scaling, 3, 20),
    }
    if model_dir is not None:
        result["model_scorer"] = {
            "model_dir": str(model_dir),
            "model": _model_name(model_dir),
            "protocols": model_protocols,
            "scaling": [model for _, model in points if model is not None],
        }
    return result


def _one_process(protocols: Mapping[str, Any], scaling: Sequence[Mapping[str, Any]], venues: int, symbols: int) -> Any:
    """Estimate one process's whole cost per update at `venues` × `symbols`, from the measured parts.

    ccxt and the feed cost what the slowest protocol's pipeline cost less its engine share (one pair, as the
    2 × 1 point measures it); the engine costs what the scaling point measured.
    """
    rows = {(row["venues"], row["symbols"]): row for row in scaling}
    feed_us = max(row["pipeline_us_per_update"] for row in protocols.values()) - rows[(2, 1)]["us_per_update"]
    total_us = feed_us + rows[(venues, symbols)]["us_per_update"]
    return {
        "venues": venues,
        "symbols": symbols,
        "feed_us_per_update": round(feed_us, 2),
        "engine_us_per_update": rows[(venues, symbols)]["us_per_update"],
        "us_per_update": round(total_us, 2),
        "updates_per_s": round(1e6 / total_us, 1),
        "updates_per_s_per_book": round(1e6 / total_us / (venues * symbols), 1),
    }


# --- capture --------------------------------------------------------------------------------------


def _market(venues: Sequence[str], symbols: Mapping[str, SimSymbolConfig], levels: int) -> SimulatorConfig:
    """The demo's market: the first venue leads the fair price, the others trail it, noisier and thinner."""
    spread = max(1, len(venues) - 1)
    return SimulatorConfig(
        seed=7,
        tick_ms=TICK_MS,
        symbols=dict(symbols),
        venues={
            name: SimVenueConfig(
                lag_ms=round(700 * i / spread),
                noise_bps=0.3 + 1.2 * i / spread,
                spread_bps=0.6 + 1.4 * i / spread,
                depth_levels=levels,
                level_gap_bps=0.4 + 0.4 * i / spread,
                size_scale=1.5 - 0.9 * i / spread,
            )
            for i, name in enumerate(venues)
        },
    )


def _btc() -> SimSymbolConfig:
    return SimSymbolConfig(
        start_price=97_000.0,
        volatility_bps=4.0,
        jumps_per_minute=8.0,
        jump_bps=12.0,
        tick_size=INSTRUMENT.tick_size,
        lot_size=INSTRUMENT.lot_size,
        top_size=0.4,
    )


async def _capture(protocol: str, ticks: int) -> _Capture:
    """Publish `ticks` simulated book updates through the protocol's server and keep what a subscriber receives."""
    wire = _WIRES[protocol]
    server = server_class(protocol)(BENCH, [INSTRUMENT])
    market = _market([BENCH, PEER], {SYMBOL: _btc()}, WIRE_LEVELS)
    simulator = MarketSimulator(market, {BENCH: [SYMBOL], PEER: [SYMBOL]})
    start_ms = time.time_ns() // 1_000_000
    peers: dict[int, BookEvent] = {}  # by the bench book's update id after the same tick
    bids: tuple[Level, ...] = ()
    asks: tuple[Level, ...] = ()

    def step() -> None:
        nonlocal bids, asks
        books = {book.venue: book for book in simulator.step()}
        ts = start_ms + simulator.tick * TICK_MS
        bids = _requote(bids, books[BENCH].bids, descending=True)
        asks = _requote(asks, books[BENCH].asks, descending=False)
        server.publish_book(SYMBOL, ts, bids, asks)
        peer = books[PEER]
        peers[server.books[SYMBOL].update_id] = BookEvent(
            venue=PEER, symbol=SYMBOL, ts=ts, recv_ts=ts, bids=peer.bids[:DEPTH], asks=peer.asks[:DEPTH]
        )

    await server.start()
    urls = server.ccxt_urls()
    try:
        step()  # a first book, so that a subscribe brings a snapshot where the protocol sends one
        markets = await _load_markets(server)
        received: list[str] = []
        snapshot = None
        async with aiohttp.ClientSession() as session, session.ws_connect(server.ws_url + wire.path) as ws:
            await ws.send_str(orjson.dumps(wire.subscribe).decode())
            received.append(await asyncio.wait_for(ws.receive_str(), CATCH_UP_S))  # the acknowledgement
            if protocol == "binance":
                # The REST snapshot, once the diff stream is subscribed: Binance's own sync procedure.
                async with session.get(f"{server.http_url}/api/v3/depth?symbol=BTCUSDT&limit=1000") as response:
                    snapshot = await response.json(loads=orjson.loads)
            for done in range(0, ticks, CHUNK_TICKS):
                for _ in range(min(CHUNK_TICKS, ticks - done)):
                    step()
                await _receive_until(ws, wire, received, server.books[SYMBOL].update_id)
    finally:
        await server.stop()
    messages = [orjson.loads(text) for text in received]
    book_indexes = [i for i, message in enumerate(messages) if wire.is_book(message)]
    if not book_indexes or len(book_indexes) != len(messages) - book_indexes[0]:
        raise RuntimeError(f"{protocol}: unexpected frames between the book frames")
    books = [messages[i] for i in book_indexes]
    return _Capture(
        protocol=protocol,
        urls=urls,
        rows=server.market_rows() if server.markets_from_rows else None,
        markets=markets,
        priming=tuple(_text(text) for text in received[: book_indexes[0]]),
        frames=tuple(_text(received[i]) for i in book_indexes),
        peers=tuple(peers[wire.update_id(book)] for book in books),
        snapshot=snapshot,
        server_book=server.book_state(SYMBOL),
        changes_per_frame=statistics.fmean(wire.changes(book) for book in books),
    )


def _requote(previous: Sequence[Level], quote: Sequence[Level], descending: bool) -> tuple[Level, ...]:
    """Take the quote's top levels, then the book's own levels beyond them, then the quote's deeper ones."""

    def beyond(price: float, edge: float) -> bool:
        return price < edge if descending else price > edge

    levels = list(quote[:REQUOTED_LEVELS])
    levels += [level for level in previous if beyond(level[0], levels[-1][0])]
    levels += [level for level in quote if beyond(level[0], levels[-1][0])]
    return tuple(levels[:WIRE_LEVELS])


def _text(text: str) -> WSMessage:
    # What ccxt's receive loop hands to Client.handle_message for a text frame.
    return WSMessage(WSMsgType.TEXT, text, None)


async def _receive_until(ws: aiohttp.ClientWebSocketResponse, wire: _Wire, received: list[str], update_id: int) -> None:
    while True:
        text = await asyncio.wait_for(ws.receive_str(), CATCH_UP_S)
        received.append(text)
        message = orjson.loads(text)
        if isinstance(message, dict) and wire.is_book(message) and wire.update_id(message) >= update_id:
            return


async def _load_markets(server: VenueServer) -> tuple[Any, Any]:
    """Load ccxt's markets for the server as the feed does: from its rows, or over its REST API."""
    rows = server.market_rows() if server.markets_from_rows else None
    client = CcxtProClient(server.protocol, server.ccxt_urls(), rows)
    try:
        await client.load_markets()
        return client._exchange.markets, client._exchange.currencies
    finally:
        await client.close()


# --- replay into ccxt -----------------------------------------------------------------------------


def _adapter(capture: _Capture) -> CcxtProClient:
    """Make a real ccxt.pro exchange for the protocol, with the server's markets and URLs; it never connects."""
    adapter = CcxtProClient(capture.protocol, capture.urls, capture.rows)
    if capture.rows is None:
        adapter._exchange.set_markets(*capture.markets)
    if capture.protocol == "binance":
        adapter._exchange.fetch = _rest_replay(capture.snapshot)
    return adapter


async def _subscribe(capture: _Capture, exchange: Any) -> Any:
    """Give `exchange` a fresh client for the book stream's URL that believes it is subscribed, as the watch call
    leaves it, and feed it the acknowledgements; return the client. Any book ccxt held before is dropped."""
    exchange.orderbooks.pop(SYMBOL, None)
    if capture.protocol == "okx":
        url = exchange.get_url("books", "public")
        subscription: Any = True
        message_hash = "books:" + SYMBOL
    elif capture.protocol == "bybit":
        url = await exchange.get_url_by_market_type(SYMBOL, False, "watchOrderBook", {})
        subscription = {"id": "1", "topics": ["orderbook.50.BTCUSDT"]}
        message_hash = "orderbook:" + SYMBOL
    else:
        url = exchange.get_ws_url("spot", exchange.get_future_ws_category("depth"))
        url += "/" + exchange.stream("spot", "multipleOrderbook::" + SYMBOL, 1)
        subscription = {
            "id": "1",
            "name": "depth",
            "symbols": [SYMBOL],
            "method": exchange.handle_order_book_subscription,
            "limit": None,
            "type": "spot",
            "params": {},
        }
        message_hash = "orderbook::" + SYMBOL
    (exchange.clients or {}).pop(url, None)
    client = exchange.client(url)
    client.subscriptions[message_hash] = subscription
    for message in capture.priming:
        client.handle_message(message)
    if capture.protocol == "binance":
        # The acknowledgement made ccxt fetch the REST snapshot (answered by `_rest_replay`) in a task of its own.
        for _ in range(SYNC_TRIES):
            book = exchange.orderbooks.get(SYMBOL)
            if book is not None and book.get("nonce") is not None:
                break
            await asyncio.sleep(0)
        else:
            raise RuntimeError("binance: ccxt did not sync its book to the REST snapshot")
    return client


def _rest_replay(body: dict[str, Any] | None) -> Callable[..., Any]:
    async def fetch(url: str, method: str = "GET", headers: Any = None, request_body: Any = None) -> Any:
        return orjson.loads(orjson.dumps(body))  # a fresh copy, as a parsed HTTP response would be

    return fetch


def _time_ccxt(client: Any, frames: Sequence[WSMessage]) -> int:
    handle = client.handle_message
    # The garbage collector stays on, as in the daemon; collecting first makes every timed pass start alike.
    gc.collect()
    start = time.perf_counter_ns()
    for frame in frames:
        handle(frame)
    return time.perf_counter_ns() - start


def _time_pipeline(
    client: Any,
    exchange: Any,
    frames: Sequence[WSMessage],
    peers: Sequence[BookEvent],
    on_book: Callable[[BookCopy], None],
    apply_peer: Callable[[BookEvent], bool],
) -> int:
    handle = client.handle_message
    books = exchange.orderbooks
    gc.collect()
    start = time.perf_counter_ns()
    for frame, peer in zip(frames, peers, strict=True):
        handle(frame)
        # The peer venue's book of the same tick, stored without evaluation (a dict store): the pair stays current.
        apply_peer(peer)
        # What CcxtProClient.watch_book returns (ccxt's watch call trims with limit()), then the feed's handler.
        on_book(_copy(SYMBOL, books[SYMBOL].limit(), DEPTH))
    return time.perf_counter_ns() - start


@dataclass(slots=True)
class _TimedPredict:
    """The model scorer's `predict`, timed: how much of the model scorer's cost is the LSTM itself."""

    ns: int = 0
    batches: int = 0
    rows: int = 0

    def __call__(self, model: ModelFile, raw: Any) -> Any:
        start = time.perf_counter_ns()
        outputs = predict(model, raw)
        self.ns += time.perf_counter_ns() - start
        self.batches += 1
        self.rows += len(raw)
        return outputs


@dataclass(slots=True)
class _Scoring:
    """What scores an engine: the rule scorer, or the model scorer with its feature tracker and timed predict."""

    scorer: Scorer
    tracker: FeatureTracker | None = None
    model: ModelScorer | None = None
    timed: _TimedPredict = field(default_factory=_TimedPredict)


def _scoring(model_dir: Path | None) -> _Scoring:
    """Build the scorer as `signals_role.build_scorer` does for `scorer.model_dir` (None: the rule scorer)."""
    rule = RuleScorer(RuleScorerConfig())
    if model_dir is None:
        return _Scoring(rule)
    settings = ScorerConfig(model_dir=model_dir, max_model_age_h=MODEL_AGE_H)
    tracker = FeatureTracker(window=settings.feature_window)
    timed = _TimedPredict()
    model = ModelScorer(
        model_dir, tracker, rule, timed, SystemClock(), settings.max_model_age_h, settings.reload_check_s
    )
    return _Scoring(model, tracker, model, timed)


def _engine(
    fees_bps: Mapping[str, float], health: FeedHealth, rejections: RejectionCounter, scoring: _Scoring | None = None
) -> SignalEngine:
    """Build the engine as the signals role does: cex_cex, the scorer, freshness from feed health."""
    config = CexCexConfig()
    scoring = scoring or _scoring(None)
    engine = SignalEngine(
        [CexCexStrategy(config, fees_bps)],
        scoring.scorer,
        config,
        _discard,
        rejections,
        clock=SystemClock(),
        usable=Freshness(dict.fromkeys(fees_bps, STALE_AFTER_MS), health),
        health=health,
    )
    if scoring.tracker is not None:
        engine.add_market_listener(scoring.tracker.on_market_event)
        engine.add_evaluation_listener(scoring.tracker.on_evaluations)
    return engine


def _check_model(scoring: _Scoring) -> None:
    """Fail if the model scorer could not use its model: the run would time the rule scorer twice."""
    model = scoring.model
    if model is not None and (model.stats.load_errors or model.stats.by_rule or not model.stats.loads):
        raise RuntimeError(f"the model scorer did not score with its model: {model.stats}")


def _discard(signal: Signal) -> None:
    """Drop a signal: the publisher is not part of this benchmark."""


async def _ccxt_pass(capture: _Capture, exchange: Any) -> int:
    """Time ccxt alone over the frames."""
    client = await _subscribe(capture, exchange)
    return _time_ccxt(client, capture.frames)


async def _pipeline_pass(
    capture: _Capture, adapter: CcxtProClient, scoring: _Scoring | None = None
) -> tuple[int, SignalEngine, RejectionCounter]:
    """Time ccxt, then arbbot's feed and engine, over the frames; return the time and the engine."""
    client = await _subscribe(capture, adapter._exchange)
    health, rejections = FeedHealth(), RejectionCounter()
    engine = _engine(FEES_BPS, health, rejections, scoring)
    now_ms = time.time_ns() // 1_000_000
    health.on_book(PEER, SYMBOL, now_ms, None)  # the peer's stream is live
    feed = CexVenueFeed(
        BENCH, lambda: adapter, [SYMBOL], DEPTH, engine.on_event, health, rejections, SystemClock(), trades=False
    )
    health.register(BENCH, SYMBOL, now_ms)
    exchange = adapter._exchange
    elapsed_ns = _time_pipeline(client, exchange, capture.frames, capture.peers, feed._on_book, engine.market.apply)
    return elapsed_ns, engine, rejections


async def _measure_protocol(
    capture: _Capture, repeats: int, evidence: dict[str, ProtocolEvidence], model_dir: Path | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Return the protocol's row, and its model scorer row when `model_dir` is given."""
    ccxt_ns: list[int] = []
    pipeline_ns: list[int] = []
    model_passes: list[tuple[int, _Scoring]] = []
    adapter = _adapter(capture)
    exchange = adapter._exchange
    try:
        for _ in range(repeats):  # alternate, so that changes in the machine's speed hit every side alike
            ccxt_ns.append(await _ccxt_pass(capture, exchange))
            ccxt_book = _copy(SYMBOL, exchange.orderbooks[SYMBOL], 10_000)
            elapsed_ns, engine, rejections = await _pipeline_pass(capture, adapter)
            pipeline_ns.append(elapsed_ns)
            pipeline_book = _copy(SYMBOL, exchange.orderbooks[SYMBOL], 10_000)
            if model_dir is not None:
                scoring = _preloaded(model_dir)
                model_ns, model_engine, _ = await _pipeline_pass(capture, adapter, scoring)
                _check_model(scoring)
                if model_engine.stats.updates != len(capture.frames):
                    raise RuntimeError("the model scorer's pipeline pass missed book updates")
                model_passes.append((model_ns, scoring))
    finally:
        await adapter.close()
    frames = len(capture.frames)
    evidence[capture.protocol] = ProtocolEvidence(
        frames=frames,
        server_book=capture.server_book,
        ccxt_book=ccxt_book,
        pipeline_book=pipeline_book,
        engine_updates=engine.stats.updates,
        rejections=rejections.total,
    )
    ccxt_s = statistics.median(ccxt_ns) / 1e9
    pipeline_s = statistics.median(pipeline_ns) / 1e9
    row = {
        "frames": frames,
        "changes_per_frame": round(capture.changes_per_frame, 1),
        "repeats": repeats,
        "ccxt_per_s": round(frames / ccxt_s, 1),
        "pipeline_per_s": round(frames / pipeline_s, 1),
        "ratio": round(ccxt_s / pipeline_s, 4),
        "ccxt_us_per_frame": round(ccxt_s / frames * 1e6, 2),
        "pipeline_us_per_update": round(pipeline_s / frames * 1e6, 2),
        "arbbot_us_per_update": round((pipeline_s - ccxt_s) / frames * 1e6, 2),
    }
    if not model_passes:
        return row, None
    model_s = statistics.median(ns for ns, _ in model_passes) / 1e9
    return row, {
        "pipeline_per_s": round(frames / model_s, 1),
        "ratio": round(ccxt_s / model_s, 4),
        "pipeline_us_per_update": round(model_s / frames * 1e6, 2),
        "rule_pipeline_us_per_update": row["pipeline_us_per_update"],
        "extra_us_per_update": round((model_s - pipeline_s) / frames * 1e6, 2),
        **_lstm_share([scoring for _, scoring in model_passes], frames),
    }


def _preloaded(model_dir: Path) -> _Scoring:
    """A model scorer with its model already loaded (the daemon loads it on the first opportunity)."""
    scoring = _scoring(model_dir)
    assert scoring.model is not None
    scoring.model.model_for("cex_cex", SYMBOL)
    return scoring


def _model_name(model_dir: Path) -> str:
    """The `name@version` the model scorer's signals carry."""
    model = _preloaded(model_dir).model
    assert model is not None
    return model.model_for("cex_cex", SYMBOL)[0]


def _lstm_share(passes: Sequence[_Scoring], updates: int) -> dict[str, float]:
    """The LSTM's own share of the model scorer's passes, per update (averaged over the passes)."""
    count = len(passes) * updates
    return {
        "scored_per_update": round(sum(s.timed.rows for s in passes) / count, 4),
        "lstm_batches_per_update": round(sum(s.timed.batches for s in passes) / count, 4),
        "lstm_us_per_update": round(sum(s.timed.ns for s in passes) / count / 1_000, 2),
        "lstm_us_per_batch": round(
            sum(s.timed.ns for s in passes) / max(1, sum(s.timed.batches for s in passes)) / 1_000, 2
        ),
    }


# --- scaling --------------------------------------------------------------------------------------


def _scaling_point(
    venues: int, symbols: int, sizes: _Sizes, model_dir: Path | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Measure µs per book update through the engine, round-robin over venues × symbols, after a warm-up.

    cex_cex evaluates the updated venue against every other venue of the symbol (both directions), so the cost
    per update grows with the venues per symbol, not with the number of symbols. With `model_dir`, model scorer
    passes alternate with the rule scorer's, and its row comes second (else None).
    """
    names = [f"v{i}" for i in range(venues)]
    symbol_configs = {
        f"C{j:02d}/USDT": SimSymbolConfig(start_price=1_000.0 + 100.0 * j, volatility_bps=4.0, top_size=5.0)
        for j in range(symbols)
    }
    simulator = MarketSimulator(_market(names, symbol_configs, DEPTH), {name: list(symbol_configs) for name in names})
    warmup = max(sizes.warmup, venues * symbols)  # at least one round, so every update meets all its pairs
    start_ms = time.time_ns() // 1_000_000
    events: list[BookEvent] = []
    while len(events) < warmup + sizes.updates:
        ts = start_ms + (simulator.tick + 1) * TICK_MS
        events.extend(
            BookEvent(venue=book.venue, symbol=book.symbol, ts=ts, recv_ts=ts, bids=book.bids, asks=book.asks)
            for book in simulator.step()  # every (venue, symbol) once per tick
        )
    fees_bps = {name: 2.0 + 0.5 * (i % 3) for i, name in enumerate(names)}
    warm, timed = events[:warmup], events[warmup : warmup + sizes.updates]
    passes: list[int] = []
    model_passes: list[tuple[int, _Scoring]] = []
    for _ in range(sizes.engine_repeats):
        passes.append(_engine_pass(warm, timed, fees_bps, start_ms))
        if model_dir is not None:
            scoring = _preloaded(model_dir)
            model_passes.append((_engine_pass(warm, timed, fees_bps, start_ms, scoring), scoring))
            _check_model(scoring)
    us_per_update = statistics.median(passes) / sizes.updates / 1_000
    row = {
        "venues": venues,
        "symbols": symbols,
        "updates": sizes.updates,
        "evaluations_per_update": 2 * (venues - 1),
        "us_per_update": round(us_per_update, 2),
        "updates_per_s_capacity": round(1e6 / us_per_update, 1),
    }
    if not model_passes:
        return row, None
    model_us = statistics.median(ns for ns, _ in model_passes) / sizes.updates / 1_000
    # The warm-up's share is left out of the LSTM figures: only timed updates count.
    return row, {
        "venues": venues,
        "symbols": symbols,
        "us_per_update": round(model_us, 2),
        "rule_us_per_update": row["us_per_update"],
        "extra_us_per_update": round(model_us - us_per_update, 2),
        "updates_per_s_capacity": round(1e6 / model_us, 1),
        **_lstm_share([scoring for _, scoring in model_passes], sizes.updates),
    }


def _engine_pass(
    warmup: Sequence[BookEvent],
    timed: Sequence[BookEvent],
    fees_bps: Mapping[str, float],
    now_ms: int,
    scoring: _Scoring | None = None,
) -> int:
    """Feed a fresh engine the warm-up events, then time it over the others (ns)."""
    health, rejections = FeedHealth(), RejectionCounter()
    engine = _engine(fees_bps, health, rejections, scoring)
    for event in warmup:
        health.on_book(event.venue, event.symbol, now_ms, None)  # every stream live, as the feeds would leave it
    on_event = engine.on_event
    for event in warmup:
        on_event(event)
    if scoring is not None:
        scoring.timed.ns = scoring.timed.batches = scoring.timed.rows = 0  # count the timed updates only
    gc.collect()
    start = time.perf_counter_ns()
    for event in timed:
        on_event(event)
    elapsed_ns = time.perf_counter_ns() - start
    if engine.stats.updates != len(warmup) + len(timed) or rejections.total:
        raise RuntimeError("the engine rejected book updates")
    return elapsed_ns


# --- report ---------------------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ccxt": importlib.metadata.version("ccxt"),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def format_table(result: Mapping[str, Any]) -> str:
    """Render a feeds benchmark result as Markdown tables for the README."""
    lines = [
        "| protocol | level changes/frame | ccxt.pro alone (frames/s) | ccxt.pro + arbbot (updates/s) | ratio "
        "| arbbot µs/update |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["protocols"].items():
        lines.append(
            f"| {name} | {row['changes_per_frame']:.0f} | {row['ccxt_per_s']:,.0f} | {row['pipeline_per_s']:,.0f} "
            f"| {row['ratio']:.2f} | {row['arbbot_us_per_update']:.1f} |"
        )
    lines += [
        "",
        "| venues × symbols | engine µs/update | updates/s capacity | per book (updates/s) |",
        "|---|---:|---:|---:|",
    ]
    for row in result["scaling"]:
        per_book = row["updates_per_s_capacity"] / (row["venues"] * row["symbols"])
        lines.append(
            f"| {row['venues']} × {row['symbols']} | {row['us_per_update']:.1f} "
            f"| {row['updates_per_s_capacity']:,.0f} | {per_book:,.0f} |"
        )
    machine = result["machine"]
    frames = {row["frames"] for row in result["protocols"].values()}
    one = result["one_process_3x20"]
    quick = " (quick run)" if result.get("quick") else ""
    lines += [
        "",
        f"One process at {one['venues']} venues × {one['symbols']} symbols (estimate, from the parts above): "
        f"{one['feed_us_per_update']:.0f} µs of ccxt and feed plus {one['engine_us_per_update']:.0f} µs of engine "
        f"per update, so {one['updates_per_s']:,.0f} updates/s in all, {one['updates_per_s_per_book']:,.0f} per book.",
        "",
        f"Measured {result['measured_at']} on {machine['cpu']} ({machine['cores']} cores), Python {machine['python']}, "
        f"ccxt {machine['ccxt']}; {'/'.join(str(n) for n in sorted(frames))} frames per protocol{quick}; "
        f"1-minute load average {machine['load_average_1m']} at start.",
    ]
    return "\n".join(lines) + "\n"
