"""EVM chain feed (web3.py v8, one websocket): `newHeads` → `gas` events, Uniswap V2 `Sync` logs → `pool` events.

Reserves are read with `getReserves()` on start and after every reconnect; a log the node marks `removed`
(a reorg) undoes its update. Token order and decimals come from the contracts themselves.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_typing import BlockNumber
from pydantic import ValidationError
from web3 import AsyncWeb3
from web3.providers.persistent import WebSocketProvider

from bot.clock import Clock, SystemClock
from bot.events import GasEvent, MarketEvent, PoolEvent
from bot.feeds.cex import Backoff
from bot.feeds.health import FeedHealth, StreamState
from bot.rejections import RejectionCounter
from bot.tasks import being_cancelled, cancel_and_wait

log = logging.getLogger(__name__)

SYNC_TOPIC = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"  # Sync(uint112,uint112)
GET_RESERVES = "0x0902f1ac"
TOKEN0, TOKEN1 = "0x0dfe1681", "0xd21220a7"
DECIMALS, SYMBOL = "0x313ce567", "0x95d89b41"
GAS_STREAM = "gas"
REORG_DEPTH = 64
GWEI = 1e9

Web3Client = AsyncWeb3[WebSocketProvider]


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """A pool to follow and the canonical pair it maps to."""

    dex: str
    address: str
    symbol: str
    fee_bps: float


@dataclass(frozen=True, slots=True)
class PoolMeta:
    """What the contracts say about a pool: which token is the canonical base, and the decimals."""

    config: PoolConfig
    base_is_token0: bool
    base_decimals: int
    quote_decimals: int

    @property
    def base(self) -> str:
        return self.config.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.config.symbol.split("/")[1]

    def reserves(self, raw0: int, raw1: int) -> tuple[float, float]:
        """(base, quote) reserves in token units."""
        raw_base, raw_quote = (raw0, raw1) if self.base_is_token0 else (raw1, raw0)
        return raw_base / 10**self.base_decimals, raw_quote / 10**self.quote_decimals


@dataclass(slots=True)
class _PoolHistory:
    """Recent (block, log index, reserve0, reserve1) updates, so a removed log can be undone."""

    updates: list[tuple[int, int, int, int]] = field(default_factory=list)

    def add(self, block: int, index: int, raw0: int, raw1: int) -> None:
        self.updates.append((block, index, raw0, raw1))
        del self.updates[:-REORG_DEPTH]

    def remove(self, block: int, index: int) -> tuple[int, int, int, int] | None:
        """Undo one update; the state that is current afterwards (None if unknown)."""
        self.updates = [u for u in self.updates if (u[0], u[1]) != (block, index)]
        return self.updates[-1] if self.updates else None


def _word(data: bytes, index: int) -> int:
    return int.from_bytes(data[32 * index : 32 * (index + 1)], "big")


def _hex_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return bytes.fromhex(str(value).removeprefix("0x"))


class ChainFeed:
    """Gas and pool events of one chain over one websocket, reconnecting with backoff."""

    def __init__(
        self,
        chain: str,
        ws_url: str,
        pools: Sequence[PoolConfig],
        sink: Callable[[MarketEvent], None],
        health: FeedHealth,
        rejections: RejectionCounter,
        clock: Clock | None = None,
        tip_floor_gwei: float = 0.01,
        token_aliases: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.chain = chain
        self._ws_url = ws_url
        self._pools = {pool.address.lower(): pool for pool in pools}
        self._sink = sink
        self._health = health
        self._rejections = rejections
        self._clock = clock or SystemClock()
        self._tip_floor_gwei = tip_floor_gwei
        self._aliases = {"WETH": "ETH", **(token_aliases or {})}
        self._backoff = backoff or Backoff()
        self._rng = random.Random()
        self._meta: dict[str, PoolMeta] = {}
        self._history: dict[str, _PoolHistory] = {}
        self._task: asyncio.Task[None] | None = None
        self.connections = 0

    def start(self) -> None:
        now = self._clock.now_ms()
        for stream in (GAS_STREAM, *self._pools):
            self._health.register(self.chain, stream, now)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"chain:{self.chain}")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if being_cancelled():  # web3 turned our cancellation into an error: stop, do not reconnect
                    raise asyncio.CancelledError from exc
                delay = self._backoff.delay(attempt, self._rng)
                attempt = min(attempt + 1, 10)
                self._health.on_fault(self.chain, None, "disconnect", StreamState.RESYNCING, self._clock.now_ms())
                log.warning("%s: chain feed %s: %s; reconnecting in %.2f s", self.chain, type(exc).__name__, exc, delay)
                await self._clock.sleep(delay)
                continue
            attempt = 0

    async def _session(self) -> None:
        async with AsyncWeb3(WebSocketProvider(self._ws_url)) as w3:
            self.connections += 1
            if self.connections > 1:
                self._health.on_reconnect(self.chain, self._clock.now_ms())
            await self._load_metadata(w3)
            heads = await w3.eth.subscribe("newHeads")
            logs = None
            if self._pools:
                logs = await w3.eth.subscribe("logs", {"address": list(self._meta), "topics": [SYNC_TOPIC]})
            await self._read_reserves(w3)
            async for message in w3.socket.process_subscriptions():
                if message.get("subscription") == heads:
                    await self._on_head(w3, message["result"])
                elif message.get("subscription") == logs:
                    self._on_log(message["result"])

    async def _call(self, w3: Web3Client, to: str, data: str, block: int | None = None) -> bytes:
        request: Any = {"to": w3.to_checksum_address(to), "data": data}
        result = await w3.eth.call(request, "latest" if block is None else BlockNumber(block))
        return bytes(result)

    async def _token(self, w3: Web3Client, address: str) -> tuple[str, int]:
        decimals = _word(await self._call(w3, address, DECIMALS), 0)
        raw = await self._call(w3, address, SYMBOL)
        length = _word(raw, 1)
        symbol = raw[64 : 64 + length].decode()
        return self._aliases.get(symbol, symbol), decimals

    async def _load_metadata(self, w3: Web3Client) -> None:
        for address, pool in self._pools.items():
            if address in self._meta:
                continue
            token0 = "0x" + (await self._call(w3, address, TOKEN0))[-20:].hex()
            token1 = "0x" + (await self._call(w3, address, TOKEN1))[-20:].hex()
            (symbol0, decimals0), (symbol1, decimals1) = await self._token(w3, token0), await self._token(w3, token1)
            base, quote = pool.symbol.split("/")
            if (symbol0, symbol1) == (base, quote):
                meta = PoolMeta(pool, True, decimals0, decimals1)
            elif (symbol1, symbol0) == (base, quote):
                meta = PoolMeta(pool, False, decimals1, decimals0)
            else:
                raise ValueError(f"pool {address} holds {symbol0}/{symbol1}, not {pool.symbol}")
            self._meta[address] = meta

    async def _read_reserves(self, w3: Web3Client) -> None:
        block = await w3.eth.block_number
        for address in self._meta:
            raw = await self._call(w3, address, GET_RESERVES, block)
            history = self._history.setdefault(address, _PoolHistory())
            history.updates.clear()
            history.add(block, -1, _word(raw, 0), _word(raw, 1))
            self._emit_pool(address, block, _word(raw, 0), _word(raw, 1))

    async def _on_head(self, w3: Web3Client, head: Mapping[str, Any]) -> None:
        number = int(head["number"])
        base_fee = int(head.get("baseFeePerGas") or 0) / GWEI
        gas_limit = int(head["gasLimit"])
        ratio = int(head["gasUsed"]) / gas_limit if gas_limit else 0.0
        history = await w3.eth.fee_history(1, BlockNumber(number), [50.0])
        rewards = history.get("reward")
        tip_wei = int(rewards[0][0]) if rewards and rewards[0] else 0
        tip = max(self._tip_floor_gwei, tip_wei / GWEI)
        self._emit(
            GasEvent,
            {
                "chain": self.chain,
                "block": number,
                "ts": int(head["timestamp"]) * 1_000,
                "recv_ts": self._clock.now_ms(),
                "base_fee_gwei": base_fee,
                "priority_fee_gwei": tip,
                "gas_used_ratio": min(1.0, ratio),
            },
            GAS_STREAM,
        )

    def _on_log(self, entry: Mapping[str, Any]) -> None:
        address = str(entry["address"]).lower()
        if address not in self._meta:
            return
        block, index = int(entry["blockNumber"]), int(entry["logIndex"])
        history = self._history.setdefault(address, _PoolHistory())
        if entry.get("removed"):
            current = history.remove(block, index)
            if current is not None:
                self._emit_pool(address, block, current[2], current[3])
            return
        data = _hex_bytes(entry["data"])
        raw0, raw1 = _word(data, 0), _word(data, 1)
        history.add(block, index, raw0, raw1)
        self._emit_pool(address, block, raw0, raw1)

    def _emit_pool(self, address: str, block: int, raw0: int, raw1: int) -> None:
        meta = self._meta[address]
        reserve_base, reserve_quote = meta.reserves(raw0, raw1)
        now = self._clock.now_ms()
        self._emit(
            PoolEvent,
            {
                "chain": self.chain,
                "dex": meta.config.dex,
                "pool": address,
                "symbol": meta.config.symbol,
                "base": meta.base,
                "quote": meta.quote,
                "reserve_base": reserve_base,
                "reserve_quote": reserve_quote,
                "fee_bps": meta.config.fee_bps,
                "block": block,
                "ts": now,
                "recv_ts": now,
            },
            address,
        )

    def _emit(self, model: type[GasEvent] | type[PoolEvent], fields: dict[str, Any], stream: str) -> None:
        try:
            event = model.model_validate(fields)
        except ValidationError as exc:
            self._rejections.reject(self.chain, f"invalid_{model.model_fields['type'].default}", str(exc.errors()[0]))
            return
        self._health.on_book(self.chain, stream, self._clock.now_ms(), None)
        self._sink(event)
