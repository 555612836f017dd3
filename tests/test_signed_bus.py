"""Signed messages on a real Redis: every publisher signs when a key is set, and risk, paper, the remote market
view, `arbbot subscribe` and the drift follower refuse (and count) unsigned and forged messages."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from helpers import eventually, eventually_async, make_signal

from bot.bus.channels import Channels
from bot.bus.codec import DecodeError, decode_message, encode
from bot.bus.market_publisher import MarketPublisher
from bot.bus.publisher import Publisher, SignalPublisher, route_by_type
from bot.bus.remote_market import RemoteMarket
from bot.bus.signing import Signer, Signing, Verifier
from bot.config import RootConfig
from bot.events import BookEvent
from bot.messages import BookMessage, Decision, Fill, Message
from bot.observe.drift import DriftTracker, follow_outcomes
from bot.observe.heartbeat import HeartbeatPublisher
from bot.paper.service import PaperRole
from bot.risk.service import RiskService, send_control
from bot.tasks import cancel_and_wait

KEY = b"signed-bus-test-key-0123456789abcdef"
FORGER = Signer(b"a-key-the-roles-do-not-have-0123")
SIGNING = Signing.from_key(KEY)
SYMBOL = "BTC/USDT"


def _config(redis_url: str, prefix: str, tmp_path: Path) -> RootConfig:
    return RootConfig.model_validate(
        {
            "symbols": [SYMBOL],
            "venues": {
                "alpha": {"exchange": "okx", "taker_fee_bps": 1.0},
                "beta": {"exchange": "okx", "taker_fee_bps": 1.0},
            },
            "redis": {"url": redis_url, "prefix": prefix},
            "risk": {"daily_loss_limit": 500.0, "default_feed_lag_ms": 10.0, "max_trades_per_minute": 1000},
            "paper": {"ledger_path": str(tmp_path / "ledger.sqlite"), "start_from": "oldest", "unwind": "hold",
                      "max_book_wait_ms": 2_000},
        }
    )  # fmt: skip


class Bus:
    """Raw access to one test prefix: publish as any signer (or none), read streams."""

    def __init__(self, client: aioredis.Redis, config: RootConfig) -> None:
        self.client = client
        self.config = config
        self.channels = Channels(config.redis.prefix)
        self.route = route_by_type(self.channels)

    async def publish(self, message: Message, signer: Signer | None) -> None:
        channel, stream = self.route(message)
        payload = encode(message, signer)
        await self.client.publish(channel, payload)
        if stream is not None:
            await self.client.xadd(stream, {"data": payload})

    async def books(self, signer: Signer | None, ts: int) -> None:
        for book in (
            BookEvent(venue="alpha", symbol=SYMBOL, ts=ts, bids=((99.0, 5.0),), asks=((100.0, 1.0), (101.5, 5.0))),
            BookEvent(venue="beta", symbol=SYMBOL, ts=ts, bids=((101.0, 1.0), (100.8, 5.0)), asks=((102.0, 5.0),)),
        ):
            await self.publish(BookMessage.of(book), signer)

    async def stream(self, stream: str) -> list[bytes]:
        return [fields[b"data"] for _, fields in await self.client.xrange(stream)]


@pytest.fixture
async def bus(redis_url: str, tmp_path: Path) -> AsyncIterator[Bus]:
    prefix = f"arbtest{uuid.uuid4().hex[:8]}"
    client = aioredis.from_url(redis_url)
    yield Bus(client, _config(redis_url, prefix, tmp_path))
    keys = await client.keys(f"{prefix}:*")
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _signal(opportunity: str) -> Any:
    now = int(time.time() * 1000)
    return make_signal(opportunity_id=opportunity, buy_price=100.0, sell_price=101.0, size=1.0, score=0.9,
                       expected_lifetime_ms=60_000.0, ts=now)  # fmt: skip


async def test_risk_decides_signed_signals_only(bus: Bus) -> None:
    service = RiskService(bus.config, bus.client, signing=SIGNING)
    await service.start()
    try:
        now = int(time.time() * 1000)
        await bus.books(None, now)  # unsigned books: refused by the market view
        await eventually(lambda: service.market.rejections.by_reason().get("unsigned") == 2)
        await bus.books(Signer(KEY), now)
        await eventually(lambda: service.market.stats.accepted == 2, message=f"{service.market.stats}")
        genuine, forged, unsigned = _signal("opp-good"), _signal("opp-forged"), _signal("opp-unsigned")
        await bus.publish(forged, FORGER)
        await bus.publish(unsigned, None)
        await bus.publish(genuine, Signer(KEY))
        await eventually(lambda: service.signals_handled == 3 and service.publisher.stats.published == 1)
        assert service.rejections.by_reason() == {"bad_signature": 1, "unsigned": 1}
        (payload,) = await bus.stream(bus.channels.decision_stream())
        decision = decode_message(payload, "decision", SIGNING.verifier)  # the decision is signed with the key
        assert isinstance(decision, Decision) and decision.signal_id == genuine.id
        assert decision.action == "execute"

        # Control: an unsigned or forged halt is ignored; the operator's signed one (arbbot risk halt) is obeyed.
        now = int(time.time() * 1000)
        assert await send_control(bus.client, bus.channels, "halt", "not the operator", now) == 1
        assert await send_control(bus.client, bus.channels, "halt", "forger", now, FORGER) == 1
        await eventually(lambda: service.rejections.by_reason() == {"bad_signature": 2, "unsigned": 2})
        assert service.engine.limits.state == "ACTIVE"
        assert await send_control(bus.client, bus.channels, "halt", "operator", now, SIGNING.signer) == 1
        await eventually(lambda: service.engine.limits.state == "HALTED")

        # Fills: only signed ones move the day's PnL.
        loss = Fill(ts=now, decision_id="d-1", legs=(), realised_pnl=-100.0, status="filled", symbol=SYMBOL)
        await bus.publish(loss, FORGER)
        await bus.publish(loss.model_copy(update={"id": "fill-2"}), Signer(KEY))
        await eventually(lambda: service.engine.limits.fills_seen == 1)
        assert service.rejections.by_reason()["bad_signature"] == 3
    finally:
        await service.stop()


async def test_paper_fills_signed_decisions_only(bus: Bus) -> None:
    role = PaperRole(bus.config, bus.client, signing=SIGNING)
    await role.start()
    try:
        now = int(time.time() * 1000)
        await bus.books(Signer(KEY), now + 200)
        await eventually(lambda: role.market.stats.accepted == 2)
        fields: dict[str, Any] = {
            "ts": now, "signal_id": "s-1", "opportunity_id": "o-1", "action": "execute", "reasons": ["ok"],
            "size": 0.5, "slippage_bps": {"buy": 0.0, "sell": 0.0}, "expected_pnl": 0.4,
            "window": {"not_before_ts": now, "deadline_ts": now + 5_000}, "gas": None, "risk_state": "ACTIVE",
            "symbol": SYMBOL, "kind": "cex_cex", "buy_venue": "alpha", "sell_venue": "beta",
            "buy_price": 100.0, "sell_price": 101.0,
        }  # fmt: skip
        genuine, forged, unsigned = (Decision.model_validate(fields) for _ in range(3))
        await bus.publish(forged, FORGER)
        await bus.publish(unsigned, None)
        await bus.publish(genuine, Signer(KEY))
        await eventually(lambda: role.trader.stats.acked == 3, message=f"{role.trader.stats}")
        assert role.trader.rejections.by_reason() == {"bad_signature": 1, "unsigned": 1}
        await eventually(lambda: role.trader.stats.published == 1)
        (payload,) = await bus.stream(bus.channels.fill_stream())
        fill = decode_message(payload, "fill", SIGNING.verifier)
        assert isinstance(fill, Fill) and fill.decision_id == genuine.id
    finally:
        await role.stop()


async def test_market_and_heartbeat_publishers_sign(bus: Bus) -> None:
    channels = bus.channels
    signed_view = RemoteMarket(bus.client, channels, verifier=SIGNING.verifier)
    open_view = RemoteMarket(bus.client, channels)  # no key: takes signed and unsigned alike
    await signed_view.start()
    await open_view.start()
    market = MarketPublisher.for_redis(bus.client, channels, 100, 1000.0, None, SIGNING.signer)
    market.start()
    pubsub = bus.client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channels.heartbeat("risk"))
    beat = HeartbeatPublisher(bus.client, channels, "risk", lambda: {"signals": 3}, signer=SIGNING.signer)
    try:
        book = BookEvent(venue="alpha", symbol=SYMBOL, ts=1, bids=((99.0, 1.0),), asks=((100.0, 1.0),))
        market.on_event(book)
        await eventually(lambda: signed_view.stats.accepted == 1 and open_view.stats.accepted == 1)
        await bus.publish(BookMessage.of(book.model_copy(update={"ts": 2})), None)
        await eventually(lambda: open_view.stats.accepted == 2)
        await eventually(lambda: signed_view.rejections.by_reason() == {"unsigned": 1})
        kept = signed_view.book("alpha", SYMBOL)
        assert kept is not None and kept.ts == 1
        assert await beat.beat()
        message = await eventually_message(pubsub)
        assert decode_message(message, "heartbeat", SIGNING.verifier).type == "heartbeat"
    finally:
        await market.close()
        await signed_view.close()
        await open_view.close()
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def eventually_message(pubsub: aioredis.client.PubSub) -> bytes:
    """The next message on `pubsub` (its subscribe confirmation is skipped)."""

    async def next_message() -> bytes | None:
        raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        return raw["data"] if raw is not None and raw["type"] == "message" else None

    return await eventually_async(next_message, message="no message arrived")


async def test_signal_publisher_signs_and_the_drift_follower_verifies(bus: Bus) -> None:
    tracker = DriftTracker()
    rejected: list[DecodeError] = []
    ready = asyncio.Event()
    follower = asyncio.create_task(
        follow_outcomes(bus.client, bus.channels, tracker, ready.set, rejected.append, verifier=SIGNING.verifier)
    )
    publisher = SignalPublisher(bus.client, bus.channels, 1_000, 100, signer=SIGNING.signer)
    publisher.start()
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await bus.publish(_signal("opp-unsigned"), None)
        publisher.submit(_signal("opp-signed"))
        await eventually(lambda: publisher.stats.published == 1 and len(rejected) == 1)
        assert rejected[0].reason == "unsigned"
        (unsigned_payload, signed_payload) = await bus.stream(bus.channels.signal_stream())
        assert "sig" not in orjson.loads(unsigned_payload)
        Verifier(KEY).verify(orjson.loads(signed_payload))
    finally:
        await publisher.close()
        await cancel_and_wait(follower)


async def test_a_generic_publisher_signs_every_type(bus: Bus) -> None:
    publisher: Publisher[Message] = Publisher(bus.client, bus.route, 1_000, 100, signer=SIGNING.signer)
    publisher.start()
    try:
        publisher.submit(Fill(ts=1, decision_id="d", legs=(), realised_pnl=0.0, status="missed", symbol=SYMBOL))
        await eventually(lambda: publisher.stats.published == 1)
    finally:
        await publisher.close()
    (payload,) = await bus.stream(bus.channels.fill_stream())
    assert isinstance(decode_message(payload, "fill", SIGNING.verifier), Fill)


async def test_arbbot_subscribe_with_a_key_prints_signed_messages_only(
    bus: Bus, subprocess_env: dict[str, str]
) -> None:
    env = dict(subprocess_env, ARBBOT_SIGNING_KEY=KEY.decode())
    pattern = f"{bus.channels.prefix}:signal:*"
    subscriber = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "subscribe", pattern, "--count", "1",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert subscriber.stderr is not None
    assert b"verifying signatures" in await asyncio.wait_for(subscriber.stderr.readline(), 30)
    genuine = _signal("opp-good")
    await bus.publish(_signal("opp-unsigned"), None)
    await bus.publish(_signal("opp-forged"), FORGER)
    await bus.publish(genuine, Signer(KEY))
    stdout, stderr = await asyncio.wait_for(subscriber.communicate(), 30)
    assert subscriber.returncode == 0, stderr.decode()
    (line,) = stdout.decode().splitlines()
    assert orjson.loads(line)["id"] == genuine.id
    report = stderr.decode()
    assert "2 message(s) failed verification and were skipped (1 unsigned, 1 badly signed)" in report
    assert KEY.decode() not in report
