"""The risk service on a real Redis: once per opportunity, expiry, HALTED on the daily loss, halt/resume, restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
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
from bot.messages import BookMessage, Decision, Fill, FillLeg, Message, Signal
from bot.model.file import save_model
from bot.model.forecast import SpreadForecaster
from bot.model.heads import Heads
from bot.model.lstm import LSTM
from bot.risk.forecast_window import ModelSpreadForecast
from bot.risk.service import RiskService, send_control
from bot.risk.window import SpreadForecast

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

    def with_risk(self, **risk: Any) -> Bus:
        """The same bus, its config's risk section updated."""
        return Bus(self.client, self.config.model_copy(update={"risk": self.config.risk.model_copy(update=risk)}))

    async def start_service(
        self,
        forecast: SpreadForecast | None = None,
        book_gap_ms: int = 0,
        before_start: Callable[[RiskService], None] | None = None,
    ) -> RiskService:
        service = RiskService(self.config, self.client, forecast=forecast)
        if before_start is not None:
            before_start(service)
        await service.start()
        now = int(time.time() * 1000)
        books = [
            BookEvent(venue="alpha", symbol=SYMBOL, ts=now, bids=((99.0, 5.0),), asks=((100.0, 1.0), (101.5, 5.0))),
            BookEvent(venue="beta", symbol=SYMBOL, ts=now, bids=((101.0, 1.0), (100.8, 5.0)), asks=((102.0, 5.0),)),
        ]
        updates = 8 if book_gap_ms else 1
        for i in range(updates):
            for book in books:
                ts = now - (updates - 1 - i) * book_gap_ms
                await self.publish(BookMessage.of(book.model_copy(update={"ts": ts})))
        await eventually(
            lambda: service.market.stats.accepted >= 2 * updates, message=f"books never arrived: {service.market.stats}"
        )
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


async def _operator_state_saved(bus: Bus, state: str) -> None:
    key = bus.channels.key("risk", "operator")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while await bus.client.hget(key, "state") != state.encode():
        assert loop.time() < deadline, f"operator state {state} never saved under {key}"
        await asyncio.sleep(0.02)


async def test_an_operator_resume_after_the_loss_limit_survives_a_restart(bus: Bus) -> None:
    service = await bus.start_service()
    now = int(time.time() * 1000)
    await bus.publish(Fill(ts=now, decision_id="d-0", legs=(), realised_pnl=-600.0, status="filled", symbol=SYMBOL))
    await eventually(lambda: service.engine.limits.state == "HALTED")
    await send_control(bus.client, bus.channels, "resume", "checked", now)
    await _operator_state_saved(bus, "ACTIVE")
    await service.stop()

    restarted = await bus.start_service()  # the -600 fill is replayed: the resume still holds for today
    assert (restarted.engine.limits.state, restarted.engine.limits.reason) == ("ACTIVE", "operator: checked")
    await bus.publish(_signal("opp-after-restart"))
    await eventually(lambda: restarted.publisher.stats.published >= 1)
    (decision,) = await bus.decisions()
    assert decision.action == "execute"
    await bus.publish(Fill(ts=now, decision_id="d-1", legs=(), realised_pnl=-1.0, status="filled", symbol=SYMBOL))
    await eventually(lambda: restarted.engine.limits.state == "HALTED", message="a further loss must halt again")
    await restarted.stop()


async def test_an_operator_halt_survives_a_restart(bus: Bus) -> None:
    service = await bus.start_service()
    await send_control(bus.client, bus.channels, "halt", "maintenance", int(time.time() * 1000))
    await _operator_state_saved(bus, "HALTED")
    await service.stop()

    restarted = await bus.start_service()
    assert restarted.engine.limits.state == "HALTED"
    await bus.publish(_signal("opp-halted"))
    await eventually(lambda: restarted.publisher.stats.published >= 1)
    await restarted.stop()
    (decision,) = await bus.decisions()
    assert decision.reasons == ("halted: operator: maintenance",)


async def test_a_bad_saved_operator_state_is_counted_and_ignored(bus: Bus) -> None:
    await bus.client.hset(bus.channels.key("risk", "operator"), mapping={"state": "PANIC", "reason": "?"})
    service = await bus.start_service()
    await service.stop()
    assert service.engine.limits.state == "ACTIVE"
    assert service.rejections.by_reason() == {"invalid_saved_state": 1}


@pytest.mark.parametrize(("balances_from", "usdt_at_start"), [("fills", 900.0), ("config", 1_000.0)])
async def test_balances_from_fills_or_from_config(bus: Bus, balances_from: str, usdt_at_start: float) -> None:
    bus = bus.with_risk(starting_balances={"alpha": {"USDT": 1_000.0, "BTC": 0.0}}, balances_from=balances_from)
    now = int(time.time() * 1000)
    earlier_run = Fill(
        ts=now, decision_id="d-old", legs=(FillLeg(venue="alpha", side="buy", price=100.0, size=1.0, fee=0.0),),
        realised_pnl=-300.0, status="filled", symbol=SYMBOL,
    )  # fmt: skip
    await bus.publish(earlier_run)
    service = await bus.start_service()
    limits = service.engine.limits
    assert limits.balance("alpha", "USDT") == pytest.approx(usdt_at_start)
    assert limits.state == "REDUCING"  # today's realised loss is replayed either way
    live = earlier_run.model_copy(update={"id": "fill-live", "decision_id": "d-live", "realised_pnl": 0.0})
    await bus.publish(live)
    await eventually(lambda: limits.fills_seen == 2)
    await service.stop()
    assert limits.balance("alpha", "USDT") == pytest.approx(usdt_at_start - 100.0)


async def test_decision_windows_end_where_the_spread_forecast_says(bus: Bus, tmp_path: Path) -> None:
    _save_forecaster(tmp_path / "cex_cex.npz")
    service = await bus.start_service(ModelSpreadForecast(tmp_path), book_gap_ms=200)
    await bus.publish(_signal("opp-f", net_edge_bps=80.0))
    await eventually(lambda: service.publisher.stats.published >= 1)
    await service.stop()
    entries: Any = await bus.client.xrange(bus.channels.signal_stream())
    published_ms = int(entries[0][0].split(b"-")[0])
    (decision,) = await bus.decisions()
    # Each book every 200 ms: the key updates every 100 ms; the mean path reaches 0 at step 4; seen 10 ms
    # (the feed lag) before it was published; orders take 30 ms one way.
    assert decision.window.deadline_ts == published_ms - 10 + 400 - 30
    assert service.engine.stats.forecasts == 1


def _save_forecaster(path: Path) -> None:
    rng = np.random.default_rng(3)
    meta: dict[str, Any] = {key: {} for key in ("normalisation", "architecture", "label", "metrics")} | {
        "features": ["net_edge_bps"],
        "window": 8,
        "data_fingerprint": "x",
        "created": "2026-01-01T00:00:00Z",
    }
    forecaster = SpreadForecaster(-10.0, 0.5, 0.9, np.full(8, -5.0), np.full(8, 5.0))
    save_model(path, LSTM.init(1, 4, 1, rng, np.float64), Heads.init(4, rng, np.float64), meta, forecaster.to_arrays())


async def test_a_signal_loop_that_dies_on_a_bug_is_restarted_after_that_entry(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison, after = _signal("opp-poison"), _signal("opp-after")

    def break_on_poison(service: RiskService) -> None:
        handle = service._handle_signal_entry

        async def dies_on_poison(entry_id: str, fields: dict[bytes, bytes]) -> None:
            if poison.id.encode() in fields.get(b"data", b""):
                raise RuntimeError("a bug in the signal path")
            await handle(entry_id, fields)

        monkeypatch.setattr(service, "_handle_signal_entry", dies_on_poison)

    service = await bus.start_service(before_start=break_on_poison)
    await bus.publish(poison)
    await bus.publish(after)
    await eventually(lambda: service._tasks.restarts["risk:signals"] >= 1, message="the loop was not restarted")
    await _processed(service, 1)
    await eventually(lambda: service.publisher.stats.published >= 1)
    await service.stop()
    assert service._tasks.deaths["risk:signals"] == 1
    assert [d.opportunity_id for d in await bus.decisions()] == ["opp-after"]


async def test_a_decision_reaches_its_stream_in_the_transaction_that_saves_it_as_made(bus: Bus) -> None:
    """With the queued publisher's writer stopped, a decision still reaches Redis: it is written with the progress
    that records it (a risk process killed after saving never leaves an opportunity decided but unpublished)."""
    service = await bus.start_service()
    await service.publisher.close()
    await bus.publish(_signal("opp-atomic"))
    await _processed(service, 1)
    await eventually(lambda: service.signals_handled >= 1)
    decisions = await bus.decisions()
    saved_id = await bus.client.get(bus.channels.key("risk", "last_signal_id"))
    acted = await bus.client.hgetall(bus.channels.key("risk", "acted"))
    await service.stop()
    assert [d.opportunity_id for d in decisions] == ["opp-atomic"]
    assert saved_id is not None and saved_id.decode() == service.last_signal_id
    assert acted == {b"opp-atomic": decisions[0].signal_id.encode()}
    assert service.publisher.stats.published == 1
