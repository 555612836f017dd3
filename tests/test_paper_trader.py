"""The paper trader: fills at the first book at or after ts + latency, a lone leg's open inventory and its unwind,
a reverted swap, and the consumer-group loop on a real Redis (rejections, skips, re-deliveries, dead consumers)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from helpers import eventually

from bot.bus.channels import Channels
from bot.bus.codec import decode_message, encode
from bot.events import BookEvent, GasEvent, PoolEvent
from bot.messages import Decision, Fill
from bot.paper.executor import Executor, fill_id, unwind_fill, unwind_fill_id
from bot.paper.ledger import Ledger, StoredFill
from bot.paper.market import MarketHistory
from bot.paper.settings import PaperConfig
from bot.paper.trader import PaperTrader
from bot.tasks import cancel_and_wait

TS = 1_763_700_000_000
POOL = "0x" + "ab" * 20
POOL_VENUE = f"uniswap_v2:{POOL}"
FEES = {"alpha": 10.0, "beta": 20.0}
START = {"alpha": {"BTC": 1.0, "USDT": 100_000.0}, "beta": {"BTC": 1.0, "ETH": 10.0, "USDT": 100_000.0}}


def _decision(**overrides: Any) -> Decision:
    fields: dict[str, Any] = {
        "ts": TS, "signal_id": "s1", "opportunity_id": "o1", "action": "execute", "reasons": [], "size": 0.5,
        "slippage_bps": {"buy": 1.0, "sell": 2.0}, "expected_pnl": 0.4,
        "window": {"not_before_ts": TS, "deadline_ts": TS + 5_000}, "gas": None, "risk_state": "ACTIVE",
        "symbol": "BTC/USDT", "kind": "cex_cex", "buy_venue": "alpha", "sell_venue": "beta",
        "buy_price": 100.9, "sell_price": 102.0,
    }  # fmt: skip
    fields.update(overrides)
    return Decision.model_validate(fields)


def _book(venue: str, ts: int, bids: Any, asks: Any, symbol: str = "BTC/USDT") -> BookEvent:
    return BookEvent(venue=venue, symbol=symbol, ts=ts, bids=bids, asks=asks)


def _pool(block: int, ts: int, reserve_quote: float) -> PoolEvent:
    return PoolEvent(
        chain="ethereum", dex="uniswap_v2", pool=POOL, symbol="ETH/USDT", base="ETH", quote="USDT",
        reserve_base=100.0, reserve_quote=reserve_quote, fee_bps=30.0, block=block, ts=ts,
    )  # fmt: skip


def _gas(block: int, ts: int) -> GasEvent:
    return GasEvent(chain="ethereum", block=block, ts=ts, base_fee_gwei=20.0, priority_fee_gwei=1.0, gas_used_ratio=0.5)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite", START)
    yield ledger
    ledger.close()


def _executor(market: MarketHistory, **config: Any) -> Executor:
    settings = {"default_latency_ms": 100, "max_book_wait_ms": 200, "unwind": "hold", **config}
    return Executor(market, PaperConfig.model_validate(settings), FEES)


async def test_each_leg_fills_at_the_first_book_at_or_after_ts_plus_latency() -> None:
    market = MarketHistory()
    market.on_event(_book("alpha", TS + 50, ((99.0, 1.0),), ((100.0, 1.0),)))  # before ts + latency: not used
    market.on_event(_book("alpha", TS + 120, ((99.5, 1.0),), ((100.5, 0.3), (101.0, 5.0))))
    market.on_event(_book("alpha", TS + 300, ((89.5, 1.0),), ((90.0, 5.0),)))  # later: not used either
    market.on_event(_book("beta", TS + 130, ((102.0, 5.0),), ((102.5, 1.0),)))
    execution, fill = await _executor(market).execute(_decision())
    assert fill is not None
    buy_cost = 0.3 * 100.5 + 0.2 * 101.0
    buy, sell = fill.legs
    assert (buy.venue, buy.side, buy.size) == ("alpha", "buy", 0.5)
    assert buy.price == pytest.approx(buy_cost / 0.5)
    assert buy.fee == pytest.approx(buy_cost * 0.001)
    assert (sell.venue, sell.price, sell.fee) == ("beta", 102.0, pytest.approx(51.0 * 0.002))
    assert fill.status == execution.status == "filled"
    assert fill.realised_pnl == pytest.approx(51.0 - buy_cost - buy_cost * 0.001 - 51.0 * 0.002)
    assert fill.ts == TS + 130
    assert fill.id == fill_id(fill.decision_id)
    assert execution.position is None
    assert [leg.reference_price for leg in execution.legs] == [100.5, 102.0]


async def test_one_leg_missing_leaves_open_inventory_in_the_ledger(ledger: Ledger) -> None:
    market = MarketHistory()
    market.on_event(_book("alpha", TS + 120, ((99.5, 1.0),), ((100.0, 5.0),)))
    execution, fill = await _executor(market).execute(_decision())  # beta never sends a book
    assert fill is not None
    assert execution.status == fill.status == "partial"
    assert [(leg.venue, leg.size) for leg in fill.legs] == [("alpha", 0.5), ("beta", 0.0)]
    assert fill.legs[1].price == 102.0  # the planned price: no book came to measure against
    assert "sell:no_book" in execution.detail
    assert ledger.record(execution)
    [position] = ledger.open_positions()
    assert (position.account, position.venue, position.symbol) == ("alpha", "alpha", "BTC/USDT")
    assert position.quantity == pytest.approx(0.5)
    assert position.entry_price == 100.0
    assert position.unwind_venue is None  # unwind: hold
    assert ledger.balances()["alpha"]["BTC"] == pytest.approx(1.5)
    assert ledger.balances()["beta"]["BTC"] == 1.0


async def test_reverse_unwinds_a_lone_buy_where_it_filled() -> None:
    market = MarketHistory()
    market.on_event(_book("alpha", TS + 120, ((99.5, 1.0),), ((100.0, 5.0),)))
    executor = _executor(market, unwind="reverse", unwind_after_ms=1_000)
    execution, _ = await executor.execute(_decision())
    position = execution.position
    assert position is not None and position.unwind_venue == "alpha"
    market.on_event(_book("alpha", TS + 900, ((100.9, 5.0),), ((101.0, 5.0),)))  # too early for the unwind
    market.on_event(_book("alpha", TS + 1_200, ((100.2, 0.3), (100.1, 1.0)), ((100.3, 5.0),)))
    done = await executor.unwind(position, position.opened_ts + 1_000)
    assert done is not None
    proceeds = 0.3 * 100.2 + 0.2 * 100.1
    assert (done.leg.leg.side, done.leg.leg.size, done.ts) == ("sell", 0.5, TS + 1_200)
    assert done.pnl == pytest.approx(proceeds - 0.5 * 100.0 - proceeds * 0.001)
    assert done.remaining == pytest.approx(0.0)


async def test_complete_finishes_the_missed_leg_where_it_missed() -> None:
    market = MarketHistory()
    market.on_event(_book("alpha", TS + 120, ((99.5, 1.0),), ((100.0, 5.0),)))
    executor = _executor(market, unwind="complete", unwind_after_ms=500)
    execution, _ = await executor.execute(_decision())
    assert execution.position is not None and execution.position.unwind_venue == "beta"
    market.on_event(_book("beta", TS + 700, ((101.0, 5.0),), ((101.5, 5.0),)))
    done = await executor.unwind(execution.position, TS + 620)
    assert done is not None
    assert (done.leg.leg.venue, done.leg.leg.side, done.leg.account) == ("beta", "sell", "beta")
    assert done.pnl == pytest.approx(0.5 * (101.0 - 100.0) - 0.5 * 101.0 * 0.002)


async def test_a_swap_on_a_moved_pool_reverts_pays_gas_and_leaves_the_cex_leg_open(ledger: Ledger) -> None:
    market = MarketHistory()
    market.on_event(_pool(99, TS - 5_000, 200_000.0))
    market.on_event(_gas(100, TS + 50))  # before ts + latency: the transaction cannot be in it
    market.on_event(_pool(101, TS + 1_000, 210_000.0))  # the pool moved in the target block
    market.on_event(_gas(101, TS + 1_000))
    market.on_event(_book("beta", TS + 150, ((2001.0, 5.0),), ((2002.0, 5.0),), symbol="ETH/USDT"))
    decision = _decision(
        symbol="ETH/USDT", kind="cex_dex", buy_venue=POOL_VENUE, buy_price=2026.0, sell_price=2001.0, size=1.0,
        gas={"max_fee_gwei": 30.0, "priority_fee_gwei": 2.0},
    )  # fmt: skip
    executor = _executor(market, max_book_wait_ms=2_000)
    task = asyncio.ensure_future(executor.execute(decision))
    await asyncio.sleep(0)
    assert not task.done()  # block 101 is not settled until a later block is seen
    market.on_event(_gas(102, TS + 13_000))
    execution, fill = await task
    assert fill is not None
    assert execution.status == fill.status == "reverted"
    pool_leg = execution.legs[0]
    assert (pool_leg.leg.status, pool_leg.leg.reason, pool_leg.account) == ("reverted", "tolerance", "ethereum")
    gas = 110_000 * 22.0 * 1e-9  # min(max fee 30, base 20 + tip 2) gwei
    assert pool_leg.leg.gas_native == pytest.approx(gas)
    assert pool_leg.reference_price == pytest.approx(2100.0 / 0.997)  # the zero-size buy price, fee included
    assert pool_leg.gas_quote == pytest.approx(gas * 2001.5) and not pool_leg.gas_unpriced
    assert fill.legs[0].fee == pytest.approx(gas * 2001.5)  # gas valued at the ETH/USDT mid
    assert execution.position is not None and execution.position.quantity == pytest.approx(-1.0)
    assert ledger.record(execution)
    assert ledger.balances()["ethereum"] == pytest.approx({"ETH": -gas})
    assert ledger.balances()["beta"]["ETH"] == pytest.approx(9.0)


async def test_a_swap_in_a_block_whose_base_fee_is_above_the_max_fee_is_not_included() -> None:
    market = MarketHistory()
    market.on_event(_pool(99, TS - 5_000, 200_000.0))
    market.on_event(GasEvent(chain="ethereum", block=101, ts=TS + 500, base_fee_gwei=40.0, priority_fee_gwei=1.0,
                             gas_used_ratio=0.9))  # fmt: skip
    market.on_event(_gas(102, TS + 12_500))
    market.on_event(_book("beta", TS + 150, ((1990.0, 5.0),), ((1991.0, 5.0),), symbol="ETH/USDT"))
    decision = _decision(
        symbol="ETH/USDT", kind="cex_dex", buy_venue=POOL_VENUE, buy_price=2030.0, sell_price=1990.0, size=1.0,
        gas={"max_fee_gwei": 30.0, "priority_fee_gwei": 2.0},
    )  # fmt: skip
    execution, _ = await _executor(market).execute(decision)
    assert (execution.legs[0].leg.status, execution.legs[0].leg.reason) == ("missed", "base_fee_above_max_fee")
    assert execution.legs[0].leg.gas_native == 0.0


# ---------------------------------------------------------------- the consumer group on Redis


class _Rig:
    def __init__(self, client: aioredis.Redis, prefix: str, ledger: Ledger, **config: Any) -> None:
        self.client = client
        self.channels = Channels(prefix)
        self.market = MarketHistory()
        self.config = PaperConfig.model_validate(
            {"default_latency_ms": 100, "max_book_wait_ms": 300, "unwind": "hold", "start_from": "oldest", **config}
        )
        self.ledger = ledger
        self.trader = PaperTrader(
            client, self.channels, self.config, Executor(self.market, self.config, FEES), ledger, 1000
        )
        self.task: asyncio.Task[None] | None = None

    async def add(self, payload: bytes) -> str:
        return (await self.client.xadd(self.channels.decision_stream(), {"data": payload})).decode()

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.trader.run())

    async def stop(self) -> None:
        if self.task is not None:
            await cancel_and_wait(self.task)

    async def pending(self) -> int:
        info = await self.client.xpending(self.channels.decision_stream(), self.config.group)
        return int(info["pending"])

    async def fills(self) -> list[Fill]:
        entries = await self.client.xrange(self.channels.fill_stream())
        out = [decode_message(fields[b"data"], "fill") for _, fields in entries]
        return [fill for fill in out if isinstance(fill, Fill)]


@pytest.fixture
async def rig(redis_url: str, ledger: Ledger) -> AsyncIterator[_Rig]:
    prefix = f"arbtest{uuid.uuid4().hex[:8]}"
    client = aioredis.from_url(redis_url)
    rig = _Rig(client, prefix, ledger)
    rig.market.on_event(_book("alpha", TS + 120, ((99.5, 1.0),), ((100.0, 5.0),)))
    rig.market.on_event(_book("beta", TS + 130, ((102.0, 5.0),), ((102.5, 5.0),)))
    yield rig
    await rig.stop()
    await client.delete(rig.channels.decision_stream(), rig.channels.fill_stream())
    await client.aclose()


async def test_bad_entries_are_counted_recorded_and_acknowledged(rig: _Rig) -> None:
    await rig.client.xgroup_create(rig.channels.decision_stream(), "paper", id="0", mkstream=True)
    await rig.add(b"{not json")
    await rig.add(encode(_decision(buy_venue="nowhere")))
    await rig.add(encode(_decision(symbol=None)))
    await rig.client.xadd(rig.channels.decision_stream(), {"other": b"x"})
    good = _decision()
    await rig.add(encode(good))
    rig.start()
    await eventually(lambda: rig.ledger.has(good.id), message="the valid decision was not filled")
    await eventually(lambda: rig.trader.stats.acked == 5)
    assert rig.ledger.rejections() == {"malformed_json": 1, "unknown_venue": 1, "missing_route": 1, "no_data": 1}
    assert await rig.pending() == 0
    assert rig.trader.rejections.total == 4


async def test_a_skip_is_recorded_not_filled_and_a_duplicate_is_filled_once(rig: _Rig) -> None:
    skip = _decision(action="skip", reasons=["edge below cost"], size=0.0)
    execute = _decision()
    await rig.client.xgroup_create(rig.channels.decision_stream(), "paper", id="0", mkstream=True)
    for payload in (encode(skip), encode(execute), encode(execute)):
        await rig.add(payload)
    rig.start()
    await eventually(lambda: rig.trader.stats.acked == 3)
    rows = {row.decision_id: row for row in rig.ledger.decisions()}
    assert rows[skip.id].status == "skipped"
    assert rows[execute.id].status == "filled"
    assert len(rig.ledger.legs()) == 2  # the execute's two legs, once
    assert rig.trader.stats.duplicates == 1
    fills = await rig.fills()
    # The duplicate delivery republished the recorded Fill: the same id and bytes, so consumers drop it.
    assert [fill.id for fill in fills] == [fill_id(execute.id)] * 2
    assert fills[0] == fills[1]
    assert await rig.pending() == 0


async def test_pending_entries_of_this_consumer_and_of_a_dead_one_are_filled_after_a_restart(
    redis_url: str, ledger: Ledger
) -> None:
    prefix = f"arbtest{uuid.uuid4().hex[:8]}"
    client = aioredis.from_url(redis_url)
    rig = _Rig(client, prefix, ledger, claim_idle_ms=1_000)
    rig.market.on_event(_book("alpha", TS + 120, ((99.5, 1.0),), ((100.0, 5.0),)))
    rig.market.on_event(_book("beta", TS + 130, ((102.0, 5.0),), ((102.5, 5.0),)))
    stream = rig.channels.decision_stream()
    try:
        await client.xgroup_create(stream, "paper", id="0", mkstream=True)
        mine, theirs = _decision(), _decision()
        await rig.add(encode(mine))
        await client.xreadgroup("paper", "paper-1", {stream: ">"}, count=1)  # read before a crash, never acked
        await rig.add(encode(theirs))
        await client.xreadgroup("paper", "paper-9", {stream: ">"}, count=1)  # a consumer that died
        rig.start()
        await eventually(lambda: rig.trader.ready.is_set())
        assert rig.ledger.has(mine.id)
        await eventually(lambda: rig.ledger.has(theirs.id), message="the dead consumer's decision was not claimed")
        await eventually(lambda: rig.trader.stats.acked == 2)
        assert await rig.pending() == 0
    finally:
        await rig.stop()
        await client.delete(stream, rig.channels.fill_stream())
        await client.aclose()


def test_fill_ids_are_deterministic_uuids() -> None:
    assert fill_id("abc") == fill_id("abc") != fill_id("abd")
    assert uuid.UUID(hex=fill_id("abc")).hex == fill_id("abc")
    assert orjson.loads(encode(_decision()))["type"] == "decision"


async def test_the_loop_unwinds_a_lone_leg_and_resumes_open_positions_after_a_restart(
    redis_url: str, tmp_path: Path
) -> None:
    prefix = f"arbtest{uuid.uuid4().hex[:8]}"
    client = aioredis.from_url(redis_url)
    ledger = Ledger(tmp_path / "ledger.sqlite", START)
    rig = _Rig(client, prefix, ledger, unwind="reverse", unwind_after_ms=1_000)
    eth = {"symbol": "ETH/USDT", "buy_price": 2000.0, "sell_price": 2010.0, "size": 1.0}
    rig.market.on_event(_book("alpha", TS + 120, ((1999.0, 5.0),), ((2000.0, 5.0),), symbol="ETH/USDT"))
    stream = rig.channels.decision_stream()
    try:
        await client.xgroup_create(stream, "paper", id="0", mkstream=True)
        later = {"ts": TS + 5_000, "window": {"not_before_ts": TS + 5_000, "deadline_ts": TS + 10_000}}
        first, second = _decision(**eth), _decision(**eth, **later)
        await rig.add(encode(first))
        rig.start()
        await eventually(lambda: ledger.open_positions(), message="beta has no ETH book: the buy should stand alone")
        rig.market.on_event(_book("alpha", TS + 1_500, ((1995.0, 5.0),), ((1996.0, 5.0),), symbol="ETH/USDT"))
        await eventually(lambda: not ledger.open_positions(), message="the lone buy was not reversed")
        assert ledger.balances()["alpha"]["ETH"] == pytest.approx(0.0)
        [position] = ledger.positions()
        assert position["unwind_pnl"] == pytest.approx(1995.0 - 2000.0 - 1995.0 * 0.001)
        await rig.stop()

        # A restart finds a position still open in the ledger and unwinds it.
        rig.market.on_event(_book("alpha", TS + 5_120, ((1999.0, 5.0),), ((2000.0, 5.0),), symbol="ETH/USDT"))
        await rig.add(encode(second))
        rig.start()
        await eventually(lambda: ledger.has(second.id))
        await rig.stop()
        assert len(ledger.open_positions()) == 1
        restarted = _Rig(client, prefix, ledger, unwind="reverse", unwind_after_ms=1_000)
        restarted.market.on_event(_book("alpha", TS + 6_200, ((2001.0, 5.0),), ((2002.0, 5.0),), symbol="ETH/USDT"))
        restarted.start()
        await eventually(lambda: not ledger.open_positions(), message="the open position was not resumed")
        await restarted.stop()
        assert ledger.balances()["alpha"]["ETH"] == pytest.approx(0.0)
    finally:
        await rig.stop()
        await client.delete(stream, rig.channels.fill_stream())
        await client.aclose()
        ledger.close()


async def test_a_multi_level_walk_at_the_planned_average_fills_on_an_unchanged_book() -> None:
    # As risk plans it: the expected price is the walk's average, the limit price its worst level.
    market = MarketHistory()
    market.on_event(_book("alpha", TS + 120, ((99.5, 1.0),), ((100.5, 0.3), (101.0, 5.0))))
    market.on_event(_book("beta", TS + 130, ((102.0, 5.0),), ((102.5, 1.0),)))
    average = (0.3 * 100.5 + 0.2 * 101.0) / 0.5
    assert average * (1 + 20 / 1e4) < 101.0  # a limit measured from the average would stop at the first level
    decision = _decision(buy_price=average, buy_limit_price=101.0, sell_limit_price=102.0)
    execution, fill = await _executor(market, cex_limit_bps=20.0).execute(decision)
    assert fill is not None and fill.status == "filled"
    assert fill.legs[0].size == pytest.approx(0.5)
    assert execution.position is None


async def test_a_ledger_that_cannot_write_leaves_the_decision_pending_until_it_can(
    redis_url: str, tmp_path: Path
) -> None:
    prefix = f"arbtest{uuid.uuid4().hex[:8]}"
    client = aioredis.from_url(redis_url)
    ledger = Ledger(tmp_path / "ledger.sqlite", START, busy_timeout_s=0.05)
    rig = _Rig(client, prefix, ledger)
    rig.market.on_event(_book("alpha", TS + 120, ((99.5, 1.0),), ((100.0, 5.0),)))
    rig.market.on_event(_book("beta", TS + 130, ((102.0, 5.0),), ((102.5, 5.0),)))
    blocker = sqlite3.connect(tmp_path / "ledger.sqlite", isolation_level=None)
    try:
        await client.xgroup_create(rig.channels.decision_stream(), "paper", id="0", mkstream=True)
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the file: every ledger write fails
        decision = _decision()
        await rig.add(encode(decision))
        rig.start()
        await eventually(lambda: rig.trader.stats.ledger_errors >= 1, message="the locked ledger was not noticed")
        assert await rig.pending() == 1, "a decision the ledger did not record must not be acknowledged"
        assert not ledger.has(decision.id)
        blocker.execute("COMMIT")
        await eventually(lambda: ledger.has(decision.id), message="the decision was not recorded once writable")
        await eventually(lambda: rig.trader.stats.acked >= 1)
        assert await rig.pending() == 0
        assert [fill.decision_id for fill in await rig.fills()] == [decision.id]
    finally:
        blocker.close()
        await rig.stop()
        await client.delete(rig.channels.decision_stream(), rig.channels.fill_stream())
        await client.aclose()
        ledger.close()


# ---------------------------------------------------------------- unwinds reach the fill stream


async def _messages(pubsub: Any, count: int, timeout_s: float = 10.0) -> list[Fill]:
    """The first `count` Fills on a subscribed channel, waiting at most `timeout_s` in all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    out: list[Fill] = []
    while len(out) < count:
        assert loop.time() < deadline, f"only {len(out)} fills reached the channel"
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            fill = decode_message(message["data"], "fill")
            assert isinstance(fill, Fill)
            out.append(fill)
    return out


def _eth_rig(client: aioredis.Redis, ledger: Ledger, **config: Any) -> _Rig:
    """A rig whose ETH/USDT decisions fill the buy on alpha and miss the sell (beta has no ETH book)."""
    rig = _Rig(client, f"arbtest{uuid.uuid4().hex[:8]}", ledger, unwind="reverse", unwind_after_ms=1_000, **config)
    rig.market.on_event(_book("alpha", TS + 120, ((1999.0, 5.0),), ((2000.0, 5.0),), symbol="ETH/USDT"))
    return rig


_ETH = {"symbol": "ETH/USDT", "buy_price": 2000.0, "sell_price": 2010.0, "size": 1.0}


async def test_each_unwind_trade_publishes_a_fill_of_the_decision_on_the_channel_and_the_stream(
    redis_url: str, ledger: Ledger
) -> None:
    client = aioredis.from_url(redis_url)
    rig = _eth_rig(client, ledger)
    # The reversal sells 0.4 at the first book after fill time + 1 s, the remaining 0.6 at the next one.
    rig.market.on_event(_book("alpha", TS + 1_500, ((1995.0, 0.4),), ((1996.0, 5.0),), symbol="ETH/USDT"))
    rig.market.on_event(_book("alpha", TS + 1_600, ((1997.0, 5.0),), ((1998.0, 5.0),), symbol="ETH/USDT"))
    pubsub = client.pubsub()
    decision = _decision(**_ETH)
    try:
        await pubsub.subscribe(rig.channels.fill("ETH/USDT"))
        await client.xgroup_create(rig.channels.decision_stream(), "paper", id="0", mkstream=True)
        await rig.add(encode(decision))
        rig.start()
        await eventually(lambda: ledger.positions() and ledger.positions()[0]["status"] == "unwound")
        await eventually(lambda: rig.trader.stats.published == 3, message=str(rig.trader.stats))
        fills = await rig.fills()
        live = await _messages(pubsub, 3)
    finally:
        await pubsub.aclose()
        await rig.stop()
        await client.delete(rig.channels.decision_stream(), rig.channels.fill_stream())
        await client.aclose()
    assert live == fills
    trade, first, second = fills
    assert trade.id == fill_id(decision.id) and trade.status == "partial"
    assert [first.id, second.id] == [unwind_fill_id(decision.id, 1), unwind_fill_id(decision.id, 2)]
    assert len({trade.id, first.id, second.id}) == 3
    assert {first.decision_id, second.decision_id} == {decision.id}
    # Every Fill of the decision, its unwinds' too, names its opportunity and kind.
    assert {(fill.opportunity_id, fill.kind) for fill in fills} == {("o1", "cex_cex")}
    assert (first.status, first.ts, second.status, second.ts) == ("partial", TS + 1_500, "filled", TS + 1_600)
    legs = [(leg.venue, leg.side, leg.size, leg.price) for fill in (first, second) for leg in fill.legs]
    assert legs == [("alpha", "sell", 0.4, 1995.0), ("alpha", "sell", pytest.approx(0.6), pytest.approx(1997.0))]
    assert first.legs[0].fee == pytest.approx(0.4 * 1995.0 * 0.001)
    assert first.realised_pnl == pytest.approx(0.4 * (1995.0 - 2000.0) - 0.4 * 1995.0 * 0.001)
    assert second.realised_pnl == pytest.approx(0.6 * (1997.0 - 2000.0) - 0.6 * 1997.0 * 0.001)
    assert ledger.positions()[0]["unwind_pnl"] == pytest.approx(first.realised_pnl + second.realised_pnl)
    assert ledger.unpublished_fills() == []


async def test_a_fill_redis_will_not_take_still_unwinds_from_the_ledger_and_is_published_once_redis_does(
    redis_url: str, ledger: Ledger
) -> None:
    client = aioredis.from_url(redis_url)
    rig = _eth_rig(client, ledger)
    rig.market.on_event(_book("alpha", TS + 1_500, ((1995.0, 5.0),), ((1996.0, 5.0),), symbol="ETH/USDT"))
    decision = _decision(**_ETH)
    fill_stream = rig.channels.fill_stream()
    try:
        await client.xgroup_create(rig.channels.decision_stream(), "paper", id="0", mkstream=True)
        await client.set(fill_stream, b"not a stream")  # every XADD of a Fill fails after the ledger commit
        await rig.add(encode(decision))
        rig.start()
        await eventually(lambda: ledger.has(decision.id))
        await eventually(lambda: not ledger.open_positions(), message="the unwind waited for the Fill's publish")
        assert rig.trader.stats.redis_errors >= 1
        assert await rig.pending() == 1, "a decision whose Fill was not published must stay pending"
        await client.delete(fill_stream)
        await eventually(lambda: rig.trader.stats.acked == 1, message=str(rig.trader.stats))
        assert await rig.pending() == 0
        await eventually(lambda: not ledger.unpublished_fills())
        fills = await rig.fills()
    finally:
        await rig.stop()
        await client.delete(rig.channels.decision_stream(), fill_stream)
        await client.aclose()
    assert {fill.id for fill in fills} == {fill_id(decision.id), unwind_fill_id(decision.id, 1)}
    assert rig.trader.stats.unwinds == 1  # the re-delivery did not unwind again
    assert len([leg for leg in ledger.legs() if leg["role"] == "unwind"]) == 1
    assert ledger.balances()["alpha"]["ETH"] == pytest.approx(0.0)


async def test_an_unwind_fill_a_crash_left_unpublished_is_published_at_the_next_start(
    redis_url: str, ledger: Ledger
) -> None:
    client = aioredis.from_url(redis_url)
    rig = _eth_rig(client, ledger)
    executor = Executor(rig.market, rig.config, FEES)
    execution, _ = await executor.execute(_decision(**_ETH))
    position = execution.position
    assert position is not None and ledger.record(execution)
    rig.market.on_event(_book("alpha", TS + 1_500, ((1995.0, 5.0),), ((1996.0, 5.0),), symbol="ETH/USDT"))
    done = await executor.unwind(position, TS + 1_120)
    assert done is not None
    fill = unwind_fill(position, done, 1)
    stored = StoredFill(fill.id, position.decision_id, 1, "ETH/USDT", encode(fill))
    assert ledger.unwind(position, (done.leg,), done.pnl, done.remaining, done.ts, stored)  # then the crash
    try:
        rig.start()
        await eventually(lambda: rig.trader.ready.is_set())
        assert [entry.id for entry in await rig.fills()] == [unwind_fill_id(position.decision_id, 1)]
        assert ledger.unpublished_fills() == []
        assert rig.trader.stats.published == 1
    finally:
        await rig.stop()
        await client.delete(rig.channels.decision_stream(), rig.channels.fill_stream())
        await client.aclose()
