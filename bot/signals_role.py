"""The `signals` role: feeds, market state, strategies, scorer and publisher in one process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from bot.bus.channels import Channels
from bot.bus.market_publisher import MarketPublisher
from bot.bus.publisher import SignalPublisher
from bot.bus.signing import Signer
from bot.clock import Clock, SystemClock
from bot.config import RootConfig
from bot.engine import SignalEngine
from bot.events import MarketEvent
from bot.feeds.ccxt_adapter import CcxtProClient
from bot.feeds.cex import Backoff, CexVenueFeed, FeedTimings
from bot.feeds.chain import ChainFeed, PoolConfig
from bot.feeds.health import FeedHealth
from bot.market_state import Freshness
from bot.messages import Signal
from bot.model.features import FeatureTracker
from bot.model.predict import predict
from bot.rejections import RejectionCounter
from bot.scoring.base import Scorer
from bot.scoring.model import ModelScorer
from bot.scoring.rule import RuleScorer
from bot.tasks import TaskSet
from strategies.cex_cex import CexCexStrategy
from strategies.cex_dex import CexDexStrategy
from strategies.dex_dex import DexDexConfig, DexDexStrategy

log = logging.getLogger(__name__)

Endpoint = tuple[dict[str, Any], list[dict[str, Any]] | None]
"""(URL overrides, market rows or None to load them over REST) that point a ccxt.pro client at a local venue."""


def build_engine(
    config: RootConfig,
    sink: Callable[[Signal], object],
    rejections: RejectionCounter,
    clock: Clock,
    health: FeedHealth | None = None,
) -> SignalEngine:
    """The signals pipeline of a config (live with `health`, or on a replay clock without it)."""
    fees = {name: venue.taker_fee_bps for name, venue in config.venues.items()}
    stale_after = {name: venue.stale_after_ms for name, venue in config.venues.items()}
    strategies: list[Any] = [CexCexStrategy(config.strategies.cex_cex, fees)]
    chain = config.chain
    if chain is not None and config.strategies.cex_dex is not None:
        strategies.append(
            CexDexStrategy(
                config.strategies.cex_dex.min_net_edge_bps,
                config.strategies.cex_dex.max_notional,
                fees,
                chain.gas_units_per_swap,
                chain.name,
                chain.gas_price_symbol,
                symbols=config.symbols,
            )
        )
    if chain is not None and config.strategies.dex_dex is not None:
        settings = config.strategies.dex_dex
        strategies.append(
            DexDexStrategy(
                DexDexConfig(
                    settings.min_net_edge_bps, settings.max_notional, settings.gas_units_per_swap, chain=chain.name
                )
            )
        )
    scorer, tracker = build_scorer(config, clock)
    engine = SignalEngine(
        strategies,
        scorer,
        config.strategies.cex_cex,
        sink,
        rejections,
        clock=clock,
        usable=Freshness(stale_after, health),
        health=health,
        chain_stale_after_ms=chain.stale_after_ms if chain is not None else None,
    )
    if tracker is not None:
        engine.add_market_listener(tracker.on_market_event)
        engine.add_evaluation_listener(tracker.on_evaluations)
    if health is not None:
        health.add_listener(engine.on_stream_state)
    return engine


def build_scorer(config: RootConfig, clock: Clock) -> tuple[Scorer, FeatureTracker | None]:
    """The rule scorer, or the model scorer and the feature tracker it reads when `scorer.model_dir` is set."""
    rule = RuleScorer(config.scorer.rule)
    settings = config.scorer
    if settings.model_dir is None:
        return rule, None
    tracker = FeatureTracker(window=settings.feature_window)
    scorer = ModelScorer(
        settings.model_dir, tracker, rule, predict, clock, settings.max_model_age_h, settings.reload_check_s
    )
    return scorer, tracker


def build_feeds(
    config: RootConfig,
    sink: Callable[[MarketEvent], None],
    health: FeedHealth,
    rejections: RejectionCounter,
    clock: Clock,
    endpoints: Mapping[str, Endpoint] | None = None,
) -> list[CexVenueFeed]:
    """One feed per configured venue, pointed at its local server when `endpoints` names it."""
    endpoints = endpoints or {}
    backoff = Backoff(config.feeds.backoff_initial_s, config.feeds.backoff_max_s)
    feeds = []
    for name, venue in config.venues.items():
        urls, rows = endpoints.get(name, ({"ws": venue.ws_url} if venue.ws_url else {}, None))

        def factory(exchange: str = venue.exchange, urls: dict[str, Any] = urls, rows: Any = rows) -> CcxtProClient:
            return CcxtProClient(exchange, urls, rows)

        feeds.append(
            CexVenueFeed(
                name,
                factory,
                config.symbols_of(name),
                config.book_depth,
                sink,
                health,
                rejections,
                clock,
                FeedTimings(venue.stale_after_ms, venue.reconnect_after_ms),
                backoff,
                trades=venue.trades,
            )
        )
    return feeds


@dataclass(frozen=True, slots=True)
class ChainEndpoint:
    """Where the chain feed connects and which pools it follows."""

    ws_url: str
    pools: tuple[PoolConfig, ...]
    token_aliases: Mapping[str, str]


def chain_endpoint(config: RootConfig) -> ChainEndpoint | None:
    """The configured node and pools (a local chain gives its own endpoint instead)."""
    chain = config.chain
    if chain is None or chain.ws_url is None:
        return None
    pools = tuple(PoolConfig(p.dex, p.address.lower(), p.symbol, p.fee_bps) for p in chain.pools)
    return ChainEndpoint(chain.ws_url, pools, {})


class SignalsRole:
    """Wire feeds → engine → publisher for every venue of the config (and the chain, when it has one)."""

    def __init__(
        self,
        config: RootConfig,
        redis_client: aioredis.Redis,
        endpoints: Mapping[str, Endpoint] | None = None,
        clock: Clock | None = None,
        on_signal: Callable[[Signal], object] | None = None,
        chain: ChainEndpoint | None = None,
        signer: Signer | None = None,
    ) -> None:
        """`signer`: sign every signal, book, gas and pool message (when a signing key is configured)."""
        self.config = config
        self.clock = clock or SystemClock()
        self.rejections = RejectionCounter()
        self.health = FeedHealth()
        self.publisher = SignalPublisher(
            redis_client,
            Channels(config.redis.prefix),
            config.redis.stream_maxlen,
            config.redis.publish_queue,
            self.clock,
            signer=signer,
        )
        self._on_signal = on_signal
        self.engine = build_engine(config, self._publish, self.rejections, self.clock, self.health)
        self.market_publisher: MarketPublisher | None = None
        if config.redis.publish_market:
            redis = config.redis
            self.market_publisher = MarketPublisher.for_redis(
                redis_client, Channels(redis.prefix), redis.publish_queue, redis.book_rate_per_s, self.clock, signer
            )
            self.engine.add_market_listener(self.market_publisher.on_event)
        self.feeds = build_feeds(config, self.engine.submit, self.health, self.rejections, self.clock, endpoints)
        self.chain_feed: ChainFeed | None = None
        chain = chain or chain_endpoint(config)
        if config.chain is not None and chain is not None:
            self.chain_feed = ChainFeed(
                config.chain.name,
                chain.ws_url,
                chain.pools,
                self.engine.submit,
                self.health,
                self.rejections,
                self.clock,
                tip_floor_gwei=config.chain.tip_floor_gwei,
                token_aliases=chain.token_aliases,
            )
        self._engine_task: asyncio.Task[None] | None = None
        self.tasks = TaskSet()
        """The role's own background tasks (supervised: restarted with backoff when they die)."""

    def _publish(self, signal: Signal) -> None:
        self.publisher.submit(signal)
        if self._on_signal is not None:
            self._on_signal(signal)

    async def start(self) -> None:
        log.info("signals role starting, config %s", self.config.fingerprint())
        self.publisher.start()
        if self.market_publisher is not None:
            self.market_publisher.start()
        self._engine_task = self.tasks.supervise(self.engine.run, "engine")
        for feed in self.feeds:
            feed.start()
        if self.chain_feed is not None:
            self.chain_feed.start()

    async def stop(self) -> None:
        """Close feeds, drain the engine, close open opportunities and flush the publisher."""
        await asyncio.gather(*(feed.close() for feed in self.feeds))
        if self.chain_feed is not None:
            await self.chain_feed.close()
        if self._engine_task is not None:
            await self.engine.stop()
            await self._engine_task
            self._engine_task = None
        self.engine.close_all()
        await self.publisher.close()
        if self.market_publisher is not None:
            await self.market_publisher.close()
