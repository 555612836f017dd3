"""The chain feed against a real node (anvil), real Uniswap V2 contracts and the real web3.py client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import pytest
from helpers import eventually, free_port

from bot.chain.activity import burn_gas
from bot.chain.local import LocalChain, PoolSpec
from bot.events import GasEvent, MarketEvent, PoolEvent
from bot.feeds.cex import Backoff
from bot.feeds.chain import ChainFeed, PoolConfig, PoolMeta
from bot.feeds.health import FeedHealth
from bot.rejections import RejectionCounter


@pytest.fixture
async def chain() -> AsyncIterator[LocalChain]:
    local = LocalChain([PoolSpec("ETH/USDT", price=3_400.0, base_liquidity=50.0)], with_activity=False)
    await local.start()
    try:
        yield local
    finally:
        await local.stop()


class _Proxy:
    """A loopback TCP proxy whose connections a test can cut."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target_port = target_port
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _feed(chain: LocalChain, ws_url: str, sink: list[MarketEvent]) -> ChainFeed:
    pools = [PoolConfig(p.dex, str(p.address).lower(), p.symbol, float(p.fee_bps)) for p in chain.pools]
    return ChainFeed(
        "local", ws_url, pools, sink.append, FeedHealth(), RejectionCounter(),
        token_aliases=chain.token_aliases, backoff=Backoff(0.05, 0.3),
    )  # fmt: skip


def _pools(events: list[MarketEvent]) -> list[PoolEvent]:
    return [e for e in events if isinstance(e, PoolEvent)]


async def _reserves(chain: LocalChain) -> tuple[float, float]:
    deployed = chain.pools[0].deployed
    raw_base, raw_quote = await deployed.reserves(chain.w3)  # already (base, quote)
    return raw_base / 10**deployed.base.decimals, raw_quote / 10**deployed.quote.decimals


async def test_a_swap_gives_a_pool_event_equal_to_get_reserves(chain: LocalChain) -> None:
    events: list[MarketEvent] = []
    feed = _feed(chain, chain.ws_url, events)
    feed.start()
    try:
        await eventually(lambda: _pools(events), timeout=20, message="no initial pool state")
        initial = _pools(events)[0]
        assert (initial.reserve_base, initial.reserve_quote) == pytest.approx(await _reserves(chain), rel=1e-12)
        assert initial.symbol == "ETH/USDT" and initial.price == pytest.approx(3_400.0, rel=1e-6)
        deployed = chain.pools[0].deployed
        await deployed.swap(
            chain.w3, "quote_in", 1_000 * 10**deployed.quote.decimals, trader=chain.trader, mine_now=True
        )
        await eventually(lambda: len(_pools(events)) >= 2, timeout=20, message="no pool event after the swap")
    finally:
        await feed.close()
    after = _pools(events)[-1]
    assert (after.reserve_base, after.reserve_quote) == pytest.approx(await _reserves(chain), rel=1e-12)
    assert after.reserve_quote == pytest.approx(initial.reserve_quote + 1_000.0, rel=1e-12)
    assert after.price > initial.price


async def test_full_blocks_raise_the_base_fee_by_the_eip1559_rule(chain: LocalChain) -> None:
    events: list[MarketEvent] = []
    feed = _feed(chain, chain.ws_url, events)
    feed.start()
    try:
        await eventually(lambda: any(isinstance(e, GasEvent) for e in events), timeout=20, message="no gas")
        assert chain.burner is not None
        await burn_gas(chain.w3, chain.burner, chain.loader, 6_000_000)  # about three full 2M-gas blocks
        await eventually(
            lambda: sum(1 for e in events if isinstance(e, GasEvent) and e.gas_used_ratio > 0.9) >= 2,
            timeout=30,
            message="blocks never filled",
        )
        await eventually(lambda: len([e for e in events if isinstance(e, GasEvent)]) >= 8, timeout=30)
    finally:
        await feed.close()
    gas = sorted({e.block: e for e in events if isinstance(e, GasEvent)}.values(), key=lambda e: e.block)
    checked = 0
    for previous, current in itertools.pairwise(gas):
        if current.block != previous.block + 1:
            continue
        # EIP-1559: base' = base × (1 + (used − target) / target / 8), target = half the gas limit
        expected = previous.base_fee_gwei * (1 + (previous.gas_used_ratio - 0.5) / 0.5 / 8)
        assert current.base_fee_gwei == pytest.approx(expected, rel=1e-6)
        checked += 1
    assert checked >= 5
    assert max(e.base_fee_gwei for e in gas) > gas[0].base_fee_gwei
    assert all(e.priority_fee_gwei >= 0.01 for e in gas)


async def test_after_the_socket_is_cut_the_feed_resubscribes_and_rereads_reserves(chain: LocalChain) -> None:
    proxy = _Proxy(chain.anvil.port)
    await proxy.start()
    events: list[MarketEvent] = []
    feed = _feed(chain, f"ws://127.0.0.1:{proxy.port}", events)
    feed.start()
    try:
        await eventually(lambda: _pools(events), timeout=20, message="no initial pool state")
        proxy.cut()
        deployed = chain.pools[0].deployed
        await deployed.swap(chain.w3, "base_in", 10**deployed.base.decimals, trader=chain.trader, mine_now=True)
        await eventually(lambda: feed.connections >= 2, timeout=20, message="the feed did not reconnect")
        expected = await _reserves(chain)
        await eventually(
            lambda: (_pools(events)[-1].reserve_base, _pools(events)[-1].reserve_quote) == pytest.approx(expected),
            timeout=20,
            message="reserves not re-read after the reconnect",
        )
        count = len(events)
        await eventually(lambda: any(isinstance(e, GasEvent) for e in events[count:]), timeout=20, message="no heads")
    finally:
        await feed.close()
        await proxy.stop()


def _sync_log(address: str, block: int, index: int, raw0: int, raw1: int, removed: bool = False) -> dict[str, object]:
    data = raw0.to_bytes(32, "big") + raw1.to_bytes(32, "big")
    return {"address": address, "blockNumber": block, "logIndex": index, "data": data, "removed": removed}


def test_a_removed_log_undoes_its_update() -> None:
    """A reorg: the node re-sends a mined Sync log with `removed: true`; the pool goes back to the state before it."""
    address = "0x" + "cd" * 20
    events: list[MarketEvent] = []
    feed = ChainFeed("local", "ws://127.0.0.1:1", [], events.append, FeedHealth(), RejectionCounter())
    pool = PoolConfig("uniswap_v2", address, "ETH/USDT", 30.0)
    feed._meta[address] = PoolMeta(pool, base_is_token0=True, base_decimals=18, quote_decimals=6)
    feed._on_log(_sync_log(address, 10, 0, 100 * 10**18, 340_000 * 10**6))
    feed._on_log(_sync_log(address, 11, 3, 99 * 10**18, 343_500 * 10**6))
    feed._on_log(_sync_log(address, 11, 3, 99 * 10**18, 343_500 * 10**6, removed=True))
    feed._on_log(_sync_log(address, 12, 0, 101 * 10**18, 336_700 * 10**6))  # the new chain's next update
    states = [(e.reserve_base, e.reserve_quote) for e in _pools(events)]
    assert states == [(100.0, 340_000.0), (99.0, 343_500.0), (100.0, 340_000.0), (101.0, 336_700.0)]


class _ClosesIntoAnError(ChainFeed):
    """A session that turns cancellation into a connection error, as web3's websocket provider can while it
    closes. The session is replaced because a real node cannot be made to do this on cue."""

    sessions = 0

    async def _session(self) -> None:
        self.sessions += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionError("listener task stopped") from None


async def test_close_ends_the_feed_when_the_client_turns_cancellation_into_an_error() -> None:
    feed = _ClosesIntoAnError("local", "ws://127.0.0.1:1", [], lambda _: None, FeedHealth(), RejectionCounter())
    feed.start()
    await eventually(lambda: feed.sessions == 1, timeout=5.0)
    await asyncio.wait_for(feed.close(), timeout=5.0)
    assert feed.sessions == 1  # closing never counts as a fault to reconnect from
