"""Background activity that keeps the local chain alive: noise swaps on the pools, and gas load with bursts.

Every new block, `run_activity` may send a noise swap on each pool (random direction and size, or a
trade that closes part of the gap to a reference price, so pools do not drift off for ever) and burns
gas through `contracts/GasBurner.vy`: around half the block gas limit in quiet blocks, so the EIP-1559
base fee wanders, and a few whole blocks' worth at once in a burst, so it climbs by up to 12.5% a
block for those blocks and then falls back. Rates are bounded: one swap per pool per block, a bounded
number of burner transactions per block or burst, nothing new while an account still has some waiting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3.exceptions import Web3Exception

from bot.chain import contracts
from bot.chain.deploy import DeployedPool, Side
from bot.chain.rpc import TransactionFailed, Web3, tx_params

log = logging.getLogger(__name__)

GWEI = 10**9
MIN_BURN_TX_GAS = 30_000
SWAP_GAS = 100_000  # gas of one noise swap (token transfer ~34k + pair.swap ~62k), counted against the load
MAX_REVERT_SHARE = 0.02  # a swap toward the reference takes at most this share of the input reserve


@dataclass(frozen=True, slots=True)
class ActivityConfig:
    """How busy the chain is kept; every random draw comes from one generator seeded with `seed`."""

    seed: int = 1
    swap_probability: float = 0.6
    """Chance, per pool and block, of a noise swap (so one every block or two)."""
    swap_bps: tuple[float, float] = (5.0, 50.0)
    """Noise swap size, bps of the input token's reserve, drawn log-uniformly."""
    revert_probability: float = 0.3
    """Chance that a swap trades toward the reference price rather than at random."""
    revert_fraction: float = 0.5
    """Share of the (log) gap to the reference price such a swap closes."""
    load_ratio: tuple[float, float] = (0.25, 0.65)
    """Gas used in a quiet block, swaps included, as a fraction of the block gas limit (the target is 0.5).

    A mean a little under the target lets the base fee drift back down after a burst."""
    base_fee_floor_gwei: float = 0.5
    """Below this base fee quiet blocks burn `lean_ratio[1]`, above the ceiling `lean_ratio[0]`."""
    base_fee_ceiling_gwei: float = 50.0
    lean_ratio: tuple[float, float] = (0.25, 0.75)
    first_burst_after: int = 5
    """Blocks before the first burst."""
    burst_every: tuple[int, int] = (20, 40)
    """Blocks from the end of one burst to the start of the next."""
    burst_blocks: tuple[int, int] = (3, 6)
    """Blocks a burst lasts: its whole gas is sent at once, and the node mines it block after block."""
    burst_ratio: float = 1.0
    """Gas sent per burst block, as a fraction of the limit."""
    burn_tx_gas: int = 250_000
    """Gas of one burner transaction (it spends almost all of it); small ones pack blocks tightly."""
    tip_gwei: tuple[float, float] = (0.05, 2.0)
    """Priority fee of every activity transaction, drawn uniformly."""

    def __post_init__(self) -> None:
        for name in ("swap_bps", "load_ratio", "lean_ratio", "burst_every", "burst_blocks", "tip_gwei"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 ≤ low ≤ high")
        if self.burst_blocks[0] < 1:
            raise ValueError("a burst lasts at least one block")
        if self.burn_tx_gas < MIN_BURN_TX_GAS:
            raise ValueError(f"burn_tx_gas must be at least {MIN_BURN_TX_GAS}")


@dataclass
class ActivityStats:
    """What the activity has done so far."""

    blocks: int = 0
    swaps: int = 0
    burn_txs: int = 0
    bursts: int = 0
    errors: int = 0
    in_burst: bool = False
    swaps_by_pool: dict[str, int] = field(default_factory=dict)


class GasPlan:
    """Decide, block by block, how much gas to send: quiet blocks around the target, bursts of full blocks."""

    def __init__(self, config: ActivityConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._until_burst = config.first_burst_after
        self._burst_left = 0
        self.bursts = 0

    def next_block(self, base_fee_wei: int) -> tuple[float, bool]:
        """Return the gas to send now (in block gas limits) and whether a burst is under way.

        A burst sends all its gas in its first block, so blocks stay full however the sending and the
        node's block interval line up; its other blocks send nothing.
        """
        config = self._config
        if self._burst_left > 0:
            self._burst_left -= 1
            return 0.0, True
        if self._until_burst <= 0:
            blocks = self._rng.randint(*config.burst_blocks)
            self._burst_left = blocks - 1
            self._until_burst = self._rng.randint(*config.burst_every)
            self.bursts += 1
            return blocks * config.burst_ratio, True
        self._until_burst -= 1
        if base_fee_wei < config.base_fee_floor_gwei * GWEI:
            return config.lean_ratio[1], False
        if base_fee_wei > config.base_fee_ceiling_gwei * GWEI:
            return config.lean_ratio[0], False
        return self._rng.uniform(*config.load_ratio), False


def split_gas(total: int, per_tx: int) -> list[int]:
    """Split `total` gas into near-equal transactions of at most `per_tx` (none below the minimum)."""
    if total < MIN_BURN_TX_GAS:
        return []
    count = math.ceil(total / per_tx)
    return [total // count] * count


async def burn_gas(
    w3: Web3,
    burner: ChecksumAddress,
    sender: str,
    gas: int,
    *,
    per_tx: int = 250_000,
    tip_wei: int = GWEI,
    max_fee_wei: int | None = None,
    nonce: int | None = None,
) -> list[HexBytes]:
    """Send burner transactions that together spend about `gas` (each spends its gas limit but ~2k)."""
    burn = w3.eth.contract(address=burner, abi=contracts.gas_burner().abi).functions.burn()
    if nonce is None:
        nonce = int(await w3.eth.get_transaction_count(w3.to_checksum_address(sender), "pending"))
    if max_fee_wei is None:
        latest = await w3.eth.get_block("latest")
        max_fee_wei = 3 * int(latest.get("baseFeePerGas", 0)) + tip_wei
    hashes = []
    for tx_gas in split_gas(gas, per_tx):
        params = tx_params(sender, nonce=nonce, gas=tx_gas, tip_wei=tip_wei, max_fee_wei=max_fee_wei)
        hashes.append(await burn.transact(params))
        nonce += 1
    return hashes


def pool_price(pool: DeployedPool, reserve_base: int, reserve_quote: int) -> float:
    """Return the pool's mid price in quote per base (token units)."""
    return (reserve_quote / 10.0**pool.quote.decimals) / (reserve_base / 10.0**pool.base.decimals)


def toward(pool: DeployedPool, reserves: tuple[int, int], target_price: float, fraction: float) -> tuple[Side, int]:
    """Return the swap that moves the pool's price `fraction` of the (log) way to `target_price` (capped)."""
    reserve_base, reserve_quote = reserves
    price = pool_price(pool, reserve_base, reserve_quote)
    new_price = price * math.exp(fraction * math.log(target_price / price))
    raw_price = new_price * 10**pool.quote.decimals / 10**pool.base.decimals
    k = reserve_base * reserve_quote
    fee = 1 - pool.fee_bps / 10_000
    if new_price < price:
        return "base_in", int(min((math.sqrt(k / raw_price) - reserve_base) / fee, MAX_REVERT_SHARE * reserve_base))
    return "quote_in", int(min((math.sqrt(k * raw_price) - reserve_quote) / fee, MAX_REVERT_SHARE * reserve_quote))


def noise(rng: random.Random, reserves: tuple[int, int], swap_bps: tuple[float, float]) -> tuple[Side, int]:
    """Return a swap in a random direction sized log-uniformly in `swap_bps` of the input reserve."""
    side: Side = "base_in" if rng.random() < 0.5 else "quote_in"
    bps = math.exp(rng.uniform(math.log(swap_bps[0]), math.log(swap_bps[1])))
    reserve_in = reserves[0] if side == "base_in" else reserves[1]
    return side, int(reserve_in * bps / 10_000)


async def _has_pending(w3: Web3, account: ChecksumAddress) -> bool:
    pending = await w3.eth.get_transaction_count(account, "pending")
    return pending > await w3.eth.get_transaction_count(account, "latest")


async def run_activity(
    w3: Web3,
    pools: Sequence[DeployedPool],
    burner: ChecksumAddress,
    *,
    trader: str,
    loader: str,
    config: ActivityConfig | None = None,
    reference: Callable[[DeployedPool], float | None] | None = None,
    stats: ActivityStats | None = None,
    poll_s: float = 0.1,
) -> None:
    """Keep the chain busy until cancelled: noise swaps from `trader`, gas load from `loader`.

    `trader` must hold both tokens of every pool (see `DeployedPool.fund`). `reference(pool)` gives the
    price swaps revert toward (default: the price the pool was seeded at).
    """
    config = config or ActivityConfig()
    stats = stats if stats is not None else ActivityStats()
    rng = random.Random(config.seed)
    plan = GasPlan(config, rng)
    trader_address, loader_address = w3.to_checksum_address(trader), w3.to_checksum_address(loader)
    last = int(await w3.eth.block_number)
    failures = 0
    while True:
        # After an error, wait longer each time (up to 5 s) rather than hammer a node that is gone.
        await asyncio.sleep(poll_s if failures == 0 else min(5.0, 0.5 * 2 ** (failures - 1)))
        try:
            head = await w3.eth.get_block("latest")
            number = int(head["number"])
            if number <= last:
                continue
            last = number
            stats.blocks += 1
            base_fee = int(head.get("baseFeePerGas", 0))
            tip = int(rng.uniform(*config.tip_gwei) * GWEI)
            max_fee = 3 * base_fee + tip
            swaps = 0
            if not await _has_pending(w3, trader_address):
                swaps = await _swap_step(w3, pools, trader_address, config, rng, reference, stats, tip, max_fee)
            ratio, stats.in_burst = plan.next_block(base_fee)
            gas = int(ratio * int(head["gasLimit"])) - (0 if stats.in_burst else swaps * SWAP_GAS)
            # Quiet load waits until the node has taken what was sent before (a burst's backlog included).
            if gas > 0 and (stats.in_burst or not await _has_pending(w3, loader_address)):
                hashes = await burn_gas(
                    w3, burner, loader_address, gas, per_tx=config.burn_tx_gas, tip_wei=tip, max_fee_wei=max_fee
                )
                stats.burn_txs += len(hashes)
            stats.bursts = plan.bursts
            failures = 0
        except asyncio.CancelledError:
            raise
        except (Web3Exception, TransactionFailed, aiohttp.ClientError, OSError, ValueError) as exc:
            stats.errors += 1
            failures += 1
            log.warning("chain activity: %s: %s; trying again at the next block", type(exc).__name__, exc)


async def _swap_step(
    w3: Web3,
    pools: Sequence[DeployedPool],
    trader: ChecksumAddress,
    config: ActivityConfig,
    rng: random.Random,
    reference: Callable[[DeployedPool], float | None] | None,
    stats: ActivityStats,
    tip: int,
    max_fee: int,
) -> int:
    nonce = int(await w3.eth.get_transaction_count(trader, "pending"))
    sent = 0
    for pool in pools:
        if rng.random() >= config.swap_probability:
            continue
        reserves = await pool.reserves(w3)
        target = (reference(pool) if reference else None) or pool.price
        if rng.random() < config.revert_probability:
            side, amount = toward(pool, reserves, target, config.revert_fraction)
        else:
            side, amount = noise(rng, reserves, config.swap_bps)
        if amount <= 0:
            continue
        await pool.send_swap(
            w3, side, amount, trader=trader, reserves=reserves, nonce=nonce, tip_wei=tip, max_fee_wei=max_fee
        )
        nonce += 2
        sent += 1
        stats.swaps += 1
        stats.swaps_by_pool[pool.pair] = stats.swaps_by_pool.get(pool.pair, 0) + 1
    return sent
