"""The risk service on a real Redis: once per opportunity, expiry, HALTED on the daily loss, halt/resume, restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import yaml
from helpers import eventually, make_signal

from bot.bus.channels import Channels
from bot.bus.codec import decode_message, encode
from bot.bus.publisher import route_by_type
from bot.config import RootConfig
from bot.events import BookEvent
from bot.messages import BookMessage, Decision, Fill, Message, Signal
from bot.risk.service import RiskService, send_control

SYMBOL = "BTC/USDT"


def _config_data(redis_url: str, prefix: str) -> dict[str, Any]:
    return {
        "symbols": [SYMBOL],
        "venues": {
            "alpha": {"exchange": "okx", "taker_fee_bps": 1.0},
            "beta": {"exchange": "okx", "taker_fee_bps": 1.0},
        },
        "redis": {"url": redis_url, "prefix": prefix},
        "risk": {"daily_loss_limit": 500.0, "default_feed_lag_ms": 10.0, "max_trades_per_minute": 1000},
    }


class Bus:
    def __init__(self, client: aioredis.Redis, config: RootConfig) -> None:
        self.client = client
        self.config = config
        self.channels = Channels(config.redis.prefix)
        self.route = route_by_type(self.channels)

    async def publish(self, message: Message) -> None:
        channel, stream = self.route(message)
        payload = encode(message)
        await self.client.publish(channel, payload)
        if stream is not None:
            await self.client.xadd(stream, {"data": payload})

    async def decisions(self) -> list[Decision]:
        entries = await self.client.xrange(self.channels.decision_stream())
        decoded = [decode_message(fields[b"data"], "decision") for _, fields in entries]
        return [d for d in decoded if isinstance(d, Decision)]

    async def start_service(self) -> RiskService:
        service = RiskService(self.config, self.client)
        await service.start()
        now = int(time.time() * 1000)
        books = [
            BookEvent(venue="alpha", symbol=SYMBOL, ts=now, bids=((99.0, 5.0),), asks=((100.0, 1.0), (101.5, 5.0))),
            BookEvent(venue="beta", symbol=SYMBOL, ts=now, bids=((101.0, 1.0), (100.8, 5.0)), asks=((102.0, 5.0),)),
        ]
        for book in books:
            await self.publish(BookMessage.of(book))
        await eventually(lambda: service.market.book("beta", SYMBOL) is not None, message="books never arrived")
        return service


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[Bus]:
    prefix = f"arbtest{uuid.uuid4().hex[:8]}"
    client = aioredis.from_url(redis_url)
    yield Bus(client, RootConfig.model_validate(_config_data(redis_url, prefix)))
    keys = await client.keys(f"{prefix}:*")
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _signal(opportunity: str, status: str = "open", **overrides: object) -> Signal:
    fields: dict[str, object] = {
        "opportunity_id": opportunity,
        "status": status,
        "buy_price": 100.0,
        "sell_price": 101.0,
        "size": 1.0,
        "score": 0.9,
        "expected_lifetime_ms": 60_000.0,
        "ts": int(time.time() * 1000),
    }
    fields.update(overrides)
    return make_signal(**fields)


async def _processed(service: RiskService, count: int) -> None:
    await eventually(lambda: service.engine.stats.signals >= count, message=f"{service.engine.stats}")


async def test_one_decision_per_opportunity_unless_it_reopens(bus: Bus) -> None:
    service = await bus.start_service()
    opened = _signal("opp-1")
    sequence = [opened, _signal("opp-1", "update", score=0.95), _signal("opp-1", "closed", size=0.0)]
    reopened = _signal("opp-1")
    for signal in [*sequence, reopened]:
        await bus.publish(signal)
    await _processed(service, 4)
    await eventually(lambda: service.publisher.stats.published >= 2)
    await service.stop()
    decisions = await bus.decisions()
    assert [d.signal_id for d in decisions] == [opened.id, reopened.id]
    first = decisions[0]
    assert first.action == "execute"
    assert first.risk_state == "ACTIVE"
    assert first.reasons[0] == "ok"
    assert first.symbol == SYMBOL
    assert (first.buy_venue, first.sell_venue) == ("alpha", "beta")
    # Buy 1 at 100 and sell 1 at 101 is the only size with an edge: 0.9 × 1.0 − fees 0.0201.
    assert first.size == pytest.approx(1.0)
    assert first.expected_pnl == pytest.approx(0.9 * 1.0 - (100.0 + 101.0) * 1e-4, rel=1e-6)
    assert first.slippage_bps.buy == 0.0
    assert first.window.not_before_ts <= first.window.deadline_ts
    assert first.gas is None
    assert service.engine.stats.ignored == 2


async def test_expired_signals_are_skipped(bus: Bus) -> None:
    service = await bus.start_service()
    stale = _signal("opp-old", expected_lifetime_ms=0.0)
    await bus.publish(stale)
    await eventually(lambda: service.publisher.stats.published >= 1)
    await service.stop()
    (decision,) = await bus.decisions()
    assert decision.signal_id == stale.id
    assert decision.action == "skip"
    assert decision.reasons == ("expired",)
    assert decision.window.deadline_ts < decision.window.not_before_ts


async def test_daily_loss_limit_halts_until_resume(bus: Bus) -> None:
    service = await bus.start_service()
    now = int(time.time() * 1000)
    await bus.publish(Fill(ts=now, decision_id="d-0", legs=(), realised_pnl=-200.0, status="filled", symbol=SYMBOL))
    await eventually(lambda: service.engine.limits.fills_seen == 1)
    assert service.engine.limits.state == "ACTIVE"
    await bus.publish(Fill(ts=now, decision_id="d-1", legs=(), realised_pnl=-100.0, status="partial", symbol=SYMBOL))
    await eventually(lambda: service.engine.limits.state == "REDUCING", message="not REDUCING at 60% of the limit")
    await bus.publish(Fill(ts=now, decision_id="d-2", legs=(), realised_pnl=-250.0, status="filled", symbol=SYMBOL))
    await eventually(lambda: service.engine.limits.state == "HALTED", message="not HALTED after the daily loss")
    await bus.publish(_signal("opp-h"))
    await eventually(lambda: service.publisher.stats.published >= 1)
    assert await send_control(bus.client, bus.channels, "resume", "checked", now) == 1
    await eventually(lambda: service.engine.limits.state == "ACTIVE")
    await bus.publish(_signal("opp-r"))
    await eventually(lambda: service.publisher.stats.published >= 2)
    await service.stop()
    halted, resumed = await bus.decisions()
    assert halted.action == "skip"
    assert halted.risk_state == "HALTED"
    assert halted.reasons[0].startswith("halted: daily_loss_limit")
    assert resumed.action == "execute"
    assert resumed.risk_state == "ACTIVE"


async def test_a_lost_control_subscription_is_renewed(bus: Bus) -> None:
    service = await bus.start_service()
    clients = await bus.client.client_list()
    control = [c for c in clients if c.get("sub") == "1" and c.get("psub") == "0"]
    assert control, "the service subscribes to its control channel"
    for connection in control:
        await bus.client.client_kill_filter(_id=connection["id"])
    now = int(time.time() * 1000)

    async def halt_heard() -> bool:
        return await send_control(bus.client, bus.channels, "halt", "drill", now) >= 1

    deadline = asyncio.get_running_loop().time() + 10.0
    while not await halt_heard():
        assert asyncio.get_running_loop().time() < deadline, "the control channel was not subscribed again"
        await asyncio.sleep(0.05)
    await eventually(lambda: service.engine.limits.state == "HALTED", message="halt not applied after resubscribing")
    await service.stop()


async def test_bad_signals_are_counted_and_the_service_goes_on(bus: Bus) -> None:
    service = await bus.start_service()
    stream = bus.channels.signal_stream()
    good = _signal("opp-g")
    await bus.client.xadd(stream, {"data": b"{oops"})
    await bus.client.xadd(stream, {"other": b"1"})
    await bus.client.xadd(stream, {"data": orjson.dumps({**orjson.loads(encode(good)), "score": 7})})
    await bus.publish(good)
    await eventually(lambda: service.publisher.stats.published >= 1)
    await service.stop()
    assert service.rejections.by_reason() == {"malformed_json": 1, "invalid_entry": 1, "invalid_fields": 1}
    assert [d.signal_id for d in await bus.decisions()] == [good.id]


async def test_restart_resumes_after_the_last_signal_and_remembers_opportunities(bus: Bus) -> None:
    service = await bus.start_service()
    await bus.publish(_signal("opp-a"))
    await eventually(lambda: service.publisher.stats.published >= 1)
    await service.stop()
    while_down = [_signal("opp-a", "update", score=0.99), _signal("opp-b")]
    for signal in while_down:
        await bus.publish(signal)
    restarted = await bus.start_service()
    await eventually(lambda: restarted.engine.stats.signals >= 2)
    await eventually(lambda: restarted.publisher.stats.published >= 1)
    await restarted.stop()
    assert restarted.engine.stats.signals == 2  # the one decided before the restart is not read again
    assert [d.opportunity_id for d in await bus.decisions()] == ["opp-a", "opp-b"]


def test_cli_halt_reaches_a_running_service_and_config_errors_are_one_line(
    redis_url: str, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    prefix = f"arbtest{uuid.uuid4().hex[:8]}"
    path = tmp_path / "risk.yaml"
    path.write_text(yaml.safe_dump(_config_data(redis_url, prefix)))
    service = subprocess.Popen(
        [sys.executable, "-m", "bot", "risk", "-c", str(path), "--duration", "60"],
        env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert service.stderr is not None
    assert b"following" in service.stderr.readline()
    halt = subprocess.run(
        [sys.executable, "-m", "bot", "risk", "halt", "--reason", "maintenance", "-c", str(path)],
        env=subprocess_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    service.terminate()
    _, stderr = service.communicate(timeout=60)
    assert halt.returncode == 0, halt.stderr
    assert "sent halt to 1 risk service(s)" in halt.stdout
    assert b"state HALTED" in stderr
    assert service.returncode == 0, stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**_config_data(redis_url, prefix), "risk": {"daily_loss_limt": 1}}))
    result = subprocess.run(
        [sys.executable, "-m", "bot", "risk", "-c", str(bad)],
        env=subprocess_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "daily_loss_limt" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
