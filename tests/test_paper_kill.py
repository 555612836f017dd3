"""Kill -9 the paper trader in the middle of a burst of decisions and restart it: every decision is filled exactly
once, none is lost, and the ledger's balances are the starting balances plus the sum of the published fills."""

from __future__ import annotations

import asyncio
import math
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from helpers import eventually

from bot.bus.channels import Channels
from bot.bus.codec import decode_message, encode
from bot.messages import BookMessage, Decision, Fill
from bot.paper.executor import fill_id

DECISIONS = 150
KILL_AFTER = 25
START = {"alpha": {"BTC": 10.0, "USDT": 1_000_000.0}, "beta": {"BTC": 10.0, "USDT": 1_000_000.0}}
FEE_BPS = {"alpha": 10.0, "beta": 20.0}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _write_config(tmp_path: Path, prefix: str) -> Path:
    config = {
        "redis": {"prefix": prefix},
        "symbols": ["BTC/USDT"],
        "venues": {
            "alpha": {"exchange": "okx", "taker_fee_bps": FEE_BPS["alpha"]},
            "beta": {"exchange": "bybit", "taker_fee_bps": FEE_BPS["beta"]},
        },
        "paper": {
            "ledger_path": str(tmp_path / "ledger.sqlite"),
            "balances": START,
            "default_latency_ms": 20,
            "cex_limit_bps": None,
            "max_book_wait_ms": 5_000,
            "start_from": "oldest",
            "unwind": "hold",
            "read_count": 4,
        },
    }
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _decision(ts: int) -> Decision:
    return Decision.model_validate(
        {
            "ts": ts, "signal_id": uuid.uuid4().hex, "opportunity_id": "o1", "action": "execute", "reasons": [],
            "size": 0.05, "slippage_bps": {"buy": 0.5, "sell": 0.5}, "expected_pnl": 0.1,
            "window": {"not_before_ts": ts, "deadline_ts": ts + 600_000}, "gas": None, "risk_state": "ACTIVE",
            "symbol": "BTC/USDT", "kind": "cex_cex", "buy_venue": "alpha", "sell_venue": "beta",
            "buy_price": 100.0, "sell_price": 100.5,
        }
    )  # fmt: skip


async def _publish_books(client: aioredis.Redis, channels: Channels) -> None:
    """Books on both venues every 10 ms, prices drifting, so fills differ from decision to decision."""
    step = 0
    while True:
        step += 1
        mid = 100.0 + 0.5 * math.sin(step / 7.0)
        for venue, shift in (("alpha", 0.0), ("beta", 0.6)):
            book = BookMessage(
                venue=venue, symbol="BTC/USDT", ts=_now_ms(),
                bids=((mid + shift - 0.05, 0.03), (mid + shift - 0.1, 5.0)),
                asks=((mid + shift + 0.05, 0.03), (mid + shift + 0.1, 5.0)),
            )  # fmt: skip
            await client.publish(channels.book(venue, "BTC/USDT"), encode(book))
        await asyncio.sleep(0.01)


async def _start_trader(config: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "paper", "-c", str(config),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 60)
    assert b"consuming" in line, line
    return proc


def _recorded(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        count: int = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    return count


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_kill_9_mid_burst_then_restart_fills_every_decision_exactly_once(
    tmp_path: Path, subprocess_env: dict[str, str], redis_client: aioredis.Redis
) -> None:
    prefix = f"arbtest{uuid.uuid4().hex[:8]}"
    channels = Channels(prefix)
    config = _write_config(tmp_path, prefix)
    ledger_path = tmp_path / "ledger.sqlite"
    books = asyncio.ensure_future(_publish_books(redis_client, channels))
    decisions: list[Decision] = []

    async def burst() -> None:
        for _ in range(DECISIONS):
            decision = _decision(_now_ms())
            await redis_client.xadd(channels.decision_stream(), {"data": encode(decision)})
            decisions.append(decision)
            await asyncio.sleep(0.01)

    processes: list[asyncio.subprocess.Process] = []
    try:
        first = await _start_trader(config, subprocess_env)
        processes.append(first)
        sender = asyncio.ensure_future(burst())
        await eventually(lambda: _recorded(ledger_path) >= KILL_AFTER, timeout=60, message="no decisions recorded")
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        killed_at = _recorded(ledger_path)
        assert KILL_AFTER <= killed_at < DECISIONS, "the trader was not killed mid-burst"
        second = await _start_trader(config, subprocess_env)
        processes.append(second)
        await asyncio.wait_for(sender, 60)
        await eventually(lambda: _recorded(ledger_path) >= DECISIONS, timeout=60, message="decisions lost")
        await _until_nothing_pending(redis_client, channels.decision_stream(), timeout_s=30)
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 30) == 0
    finally:
        books.cancel()
        await asyncio.gather(books, return_exceptions=True)
        for proc in processes:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        fill_entries = await redis_client.xrange(channels.fill_stream())
        await redis_client.delete(channels.decision_stream(), channels.fill_stream())

    sent = {decision.id for decision in decisions}
    assert len(sent) == DECISIONS
    with sqlite3.connect(ledger_path) as db:
        recorded = [row[0] for row in db.execute("SELECT decision_id FROM decisions")]
        legs_per_decision = dict(db.execute("SELECT decision_id, COUNT(*) FROM legs GROUP BY decision_id").fetchall())
        balances = {(a, s): v for a, s, v in db.execute("SELECT account, asset, amount FROM balances")}
        statuses = {row[0] for row in db.execute("SELECT DISTINCT status FROM decisions")}
    assert sorted(recorded) == sorted(sent)  # none lost, none twice
    assert set(legs_per_decision.values()) == {2}
    assert statuses == {"filled"}

    fills: dict[str, Fill] = {}
    for _, fields in fill_entries:
        fill = decode_message(fields[b"data"], "fill")
        assert isinstance(fill, Fill)
        assert fills.setdefault(fill.id, fill) == fill  # a Fill published twice is the same Fill
    assert set(fills) == {fill_id(decision_id) for decision_id in sent}
    expected: dict[tuple[str, str], float] = {
        (account, asset): amount for account, assets in START.items() for asset, amount in assets.items()
    }
    for fill in fills.values():
        for leg in fill.legs:
            sign = 1.0 if leg.side == "buy" else -1.0
            expected[(leg.venue, "BTC")] += sign * leg.size
            expected[(leg.venue, "USDT")] += -sign * leg.size * leg.price - leg.fee
    assert balances.keys() == expected.keys()
    for key, amount in expected.items():
        assert balances[key] == pytest.approx(amount, rel=1e-12, abs=1e-9), key


async def _until_nothing_pending(client: aioredis.Redis, stream: str, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        info: Any = await client.xpending(stream, "paper")
        if int(info["pending"]) == 0:
            return
        assert loop.time() < deadline, f"{info['pending']} decisions left unacknowledged"
        await asyncio.sleep(0.05)
