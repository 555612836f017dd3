"""Chain simulator: an EIP-1559 gas market and constant-product pools, one block at a time, no node needed.

Gas: each block's gas used comes from a congestion process. A demand level (log base fee at which blocks
would be filled to the target) moves with a daily cycle and a slow mean-reverting wander; blocks fill
above the target when the base fee sits below that level and below it when above (users are priced
out), with skewed per-block noise and occasional bursts of full blocks. The base fee then follows the
EIP-1559 rule exactly, in integer wei. With the defaults the statistics resemble Ethereum mainnet's
(CALIBRATION.md): see `ChainSimParams`.

Pools: each block noise traders swap random sizes in random directions, then an arbitrageur trades the
pool toward the CEX fair price, sized to where its marginal price after the fee meets the fair price,
and only when that trade's profit beats its gas. Pools therefore lag the CEX, and gaps persist while gas
is dear.

Deterministic for a seed and a sequence of block times and fair prices.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bot.config import ChainConfig, LocalPoolEntry
from bot.events import GasEvent, PoolEvent
from strategies.amm import amount_out

WEI_PER_GWEI = 10**9
BASE_FEE_MAX_CHANGE_DENOMINATOR = 8
ELASTICITY_MULTIPLIER = 2
_DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class ChainSimParams:
    """Parameters of the simulated chain; the defaults are tuned to Ethereum mainnet (CALIBRATION.md).

    Over 30,000 blocks (seed 7) the defaults give a base fee median of 17 gwei (15-24 over 32 seeds),
    p95/median 2.7 (2.0-3.8), per-block change p5 -4.8%, median -0.9%, p95 +9.1%, 3.3% of blocks rising
    by 12% or more, gas used / limit mean 0.50 (p10 0.34, median 0.47, p90 0.72) and a std of the hourly
    (300-block) log base-fee change of 0.27-0.31.
    """

    block_time_s: float = 12.0
    """Seconds between blocks (Ethereum: 12)."""
    first_block: int = 21_000_000
    """Number of the first simulated block."""
    gas_limit: int = 30_000_000
    """Block gas limit; the EIP-1559 target is half of it."""
    demand_base_fee_gwei: float = 20.0
    """Base fee at which average demand fills blocks to the target: the level the base fee wanders around."""
    daily_amplitude: float = 0.7
    """Amplitude of the daily demand cycle, in log base fee (0.7: ×2 at the peak, ÷2 at the trough).

    Larger than the real daily swing: it also stands in for the swings over days and weeks of the real
    two-month sample, which a slower random process would not show reliably within a few days."""
    daily_peak_utc_h: float = 15.0
    """Hour of the day (UTC) of peak demand (the US and European sessions overlap)."""
    demand_sigma: float = 0.3
    """Stationary std of the slow demand wander, in log base fee."""
    demand_half_life_s: float = 2.5 * 3_600.0
    """Half-life of the slow demand wander, seconds of simulated time."""
    elasticity: float = 0.5
    """Gas used ratio added per unit of log(demand level / base fee): how fast a base fee off the level is
    pulled back (the base fee moves by about elasticity/4 of the log gap per block)."""
    block_noise: float = 0.16
    """Std of the per-block gas used ratio noise."""
    block_noise_skew: float = 0.6
    """Log-normal shape of that noise (0: symmetric); right skew gives many quiet blocks and a few busy ones."""
    burst_probability: float = 0.011
    """Chance per block that a burst of full blocks starts (a mint, a liquidation cascade)."""
    burst_continue: float = 0.3
    """Chance that a burst goes on for one more block: most bursts last one block."""
    burst_max_blocks: int = 20
    """Longest burst."""
    burst_fill: tuple[float, float] = (0.985, 1.0)
    """Gas used ratio of a burst block, drawn uniformly; ≥ 0.985 raises the base fee by ≥ 12%."""
    tip_median_gwei: float = 1.5
    """Median of the blocks' median priority fee."""
    tip_sigma: float = 0.5
    """Log-normal shape of the priority fee."""
    burst_tip_multiplier: float = 2.0
    """Tips rise this much in burst blocks: users bid for scarce space."""
    noise_swaps_per_block: float = 2.0
    """Mean number of noise swaps per pool and block (Poisson)."""
    noise_swap_bps: float = 10.0
    """Median noise swap size, bps of the input token's reserve (log-normal)."""
    noise_swap_sigma: float = 1.0
    """Log-normal shape of the noise swap size."""
    noise_swap_max_bps: float = 300.0
    """Largest noise swap, bps of the input reserve."""
    arbitrage: bool = True
    """Whether the arbitrageur trades pools toward the fair price."""
    arb_min_profit_quote: float = 0.0
    """Profit over gas, in the pool's quote, the arbitrageur wants before it trades."""
    dex: str = "uniswap_v2"
    """DEX name of the simulated pools."""
    gas_token_price: float = 3_400.0
    """Price of the gas token in a pool's quote when no fair price gives it."""

    def __post_init__(self) -> None:
        positive = ("block_time_s", "demand_base_fee_gwei", "demand_half_life_s", "tip_median_gwei", "gas_token_price")
        for name in positive:
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be > 0")
        non_negative = (
            "daily_amplitude",
            "demand_sigma",
            "elasticity",
            "block_noise",
            "block_noise_skew",
            "tip_sigma",
            "burst_tip_multiplier",
            "noise_swaps_per_block",
            "noise_swap_bps",
            "noise_swap_sigma",
            "noise_swap_max_bps",
            "arb_min_profit_quote",
        )
        for name in non_negative:
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be ≥ 0")
        for name in ("burst_probability", "burst_continue"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        low, high = self.burst_fill
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError("burst_fill must be (low, high) with 0 ≤ low ≤ high ≤ 1")
        if self.gas_limit < 2 or self.first_block < 0 or self.burst_max_blocks < 1:
            raise ValueError("gas_limit must be ≥ 2, first_block ≥ 0 and burst_max_blocks ≥ 1")


def next_base_fee_wei(base_fee_wei: int, gas_used: int, gas_limit: int) -> int:
    """Return the next block's base fee by the EIP-1559 rule, in integer wei as the spec computes it."""
    target = gas_limit // ELASTICITY_MULTIPLIER
    if gas_used == target:
        return base_fee_wei
    if gas_used > target:
        delta = base_fee_wei * (gas_used - target) // target // BASE_FEE_MAX_CHANGE_DENOMINATOR
        return base_fee_wei + max(delta, 1)
    return base_fee_wei - base_fee_wei * (target - gas_used) // target // BASE_FEE_MAX_CHANGE_DENOMINATOR


def arbitrage_trade(
    reserve_base: float, reserve_quote: float, fee_bps: float, fair_price: float
) -> tuple[bool, float, float]:
    """Size the trade that takes a pool's marginal price after the fee to `fair_price`.

    Return (buys_base, amount_in, profit): the arbitrageur buys base with quote when the pool is cheap,
    sells base for quote when it is dear; `amount_in` is in the input token, `profit` in quote valued at
    `fair_price` (0 and 0 when no trade pays before gas).
    """
    keep = 1.0 - fee_bps / 1e4
    if keep <= 0.0:
        return False, 0.0, 0.0
    buys_base = reserve_quote / reserve_base < keep * fair_price
    if buys_base:  # quote in, base out; base is worth fair_price
        reserve_in, reserve_out, value_in, value_out = reserve_quote, reserve_base, 1.0, fair_price
    else:  # base in, quote out
        reserve_in, reserve_out, value_in, value_out = reserve_base, reserve_quote, fair_price, 1.0
    # The marginal output keep·R_in·R_out / (R_in + keep·x)² meets value_in / value_out at
    # x = (√(keep·R_in·R_out·value_out/value_in) − R_in) / keep, written as a quotient so that a small
    # trade does not come out as the difference of two nearly equal numbers.
    scaled = keep * reserve_out * value_out / value_in
    root = math.sqrt(reserve_in * scaled)
    size = reserve_in * (scaled - reserve_in) / (keep * (root + reserve_in))
    if size <= 0.0:
        return buys_base, 0.0, 0.0
    profit = amount_out(reserve_in, reserve_out, size, fee_bps) * value_out - size * value_in
    return buys_base, size, max(profit, 0.0)


def pool_address(chain: str, dex: str, symbol: str, index: int) -> str:
    """Return a stable made-up address for a simulated pool."""
    digest = hashlib.sha256(f"{chain}/{dex}/{symbol}/{index}".encode()).hexdigest()
    return "0x" + digest[:40]


def _stream_rng(seed: int, *names: str) -> np.random.Generator:
    # Same scheme as the market simulator: a stable seed per stream, so adding a pool changes nothing else.
    return np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in names)])


class _GasMarket:
    """The congestion process and the EIP-1559 base fee, one block at a time."""

    def __init__(self, params: ChainSimParams, rng: np.random.Generator) -> None:
        self._p = params
        self._rng = rng
        self._demand = 0.0  # slow wander of the log demand level, around 0
        self._burst_left = 0
        self._log_reference = math.log(params.demand_base_fee_gwei)
        self.base_fee_wei: int | None = None
        # Standardise the log-normal noise to mean 0 and std 1.
        skew = params.block_noise_skew
        self._noise_mean = math.exp(skew**2 / 2.0)
        self._noise_std = self._noise_mean * math.sqrt(math.expm1(skew**2)) if skew > 0.0 else 1.0

    def _level(self, now_ms: int) -> float:
        hour = (now_ms / 1_000.0 % _DAY_S) / 3_600.0
        cycle = self._p.daily_amplitude * math.cos(2.0 * math.pi * (hour - self._p.daily_peak_utc_h) / 24.0)
        return self._log_reference + self._demand + cycle

    def next_block(self, now_ms: int, dt_s: float) -> tuple[int, int, float, bool]:
        """Advance one block; return (base fee wei, gas used, median tip gwei, burst)."""
        p, rng = self._p, self._rng
        if self.base_fee_wei is None:
            self.base_fee_wei = round(math.exp(self._level(now_ms)) * WEI_PER_GWEI)
        decay = math.exp(-math.log(2.0) * dt_s / p.demand_half_life_s)
        self._demand = self._demand * decay + p.demand_sigma * math.sqrt(1.0 - decay**2) * float(rng.standard_normal())
        burst = self._burst_left > 0
        if burst:
            self._burst_left -= 1
        elif float(rng.random()) < p.burst_probability:
            burst = True
            while self._burst_left < p.burst_max_blocks - 1 and float(rng.random()) < p.burst_continue:
                self._burst_left += 1
        if burst:
            ratio = float(rng.uniform(*p.burst_fill))
        else:
            gap = self._level(now_ms) - math.log(self.base_fee_wei / WEI_PER_GWEI)
            if p.block_noise_skew > 0.0:
                shock = (float(rng.lognormal(0.0, p.block_noise_skew)) - self._noise_mean) / self._noise_std
            else:
                shock = float(rng.standard_normal())
            ratio = 0.5 + p.elasticity * gap + p.block_noise * shock
        gas_used = round(min(1.0, max(0.0, ratio)) * p.gas_limit)
        tip = p.tip_median_gwei * float(rng.lognormal(0.0, p.tip_sigma))
        if burst:
            tip *= p.burst_tip_multiplier
        base_fee = self.base_fee_wei
        self.base_fee_wei = next_base_fee_wei(base_fee, gas_used, p.gas_limit)
        return base_fee, gas_used, tip, burst


@dataclass(slots=True)
class _Pool:
    entry: LocalPoolEntry
    address: str
    base: str
    quote: str
    rng: np.random.Generator
    reserve_base: float = 0.0
    reserve_quote: float = 0.0

    def swap(self, buys_base: bool, amount_in: float) -> None:
        fee = self.entry.fee_bps
        if buys_base:
            out = amount_out(self.reserve_quote, self.reserve_base, amount_in, fee)
            self.reserve_quote += amount_in
            self.reserve_base -= out
        else:
            out = amount_out(self.reserve_base, self.reserve_quote, amount_in, fee)
            self.reserve_base += amount_in
            self.reserve_quote -= out

    def noise(self, params: ChainSimParams) -> None:
        for _ in range(int(self.rng.poisson(params.noise_swaps_per_block))):
            buys_base = bool(self.rng.random() < 0.5)
            bps = min(
                params.noise_swap_max_bps,
                params.noise_swap_bps * float(self.rng.lognormal(0.0, params.noise_swap_sigma)),
            )
            self.swap(buys_base, (self.reserve_quote if buys_base else self.reserve_base) * bps * 1e-4)


class ChainSimulator:
    """Simulate one chain's gas market and its `local_pools`, a block per `step`."""

    def __init__(self, chain: ChainConfig, seed: int, params: ChainSimParams | None = None) -> None:
        self.chain = chain
        self.params = params or ChainSimParams()
        self.block = self.params.first_block
        """Number of the next block."""
        self._gas = _GasMarket(self.params, _stream_rng(seed, chain.name))
        self._gas_base = chain.gas_price_symbol.split("/")[0]
        self._last_ms: int | None = None
        self._pools = []
        for index, entry in enumerate(chain.local_pools):
            base, quote = entry.symbol.split("/")
            address = pool_address(chain.name, self.params.dex, entry.symbol, index)
            rng = _stream_rng(seed, chain.name, "pool", entry.symbol, str(index))
            self._pools.append(_Pool(entry, address, base, quote, rng))

    @property
    def base_fee_gwei(self) -> float | None:
        """Base fee of the next block (None before the first)."""
        wei = self._gas.base_fee_wei
        return None if wei is None else wei / WEI_PER_GWEI

    def gas_token_price(self, quote: str, fair_prices: Mapping[str, float]) -> float:
        """Return the gas token's price in `quote`: from the fair prices when they give it, else the fallback."""
        if quote == self._gas_base:
            return 1.0
        direct = fair_prices.get(f"{self._gas_base}/{quote}")
        if direct is not None:
            return direct
        # Equivalent quotes (USDT, USDC) are close enough for a gas cost.
        return fair_prices.get(self.chain.gas_price_symbol, self.params.gas_token_price)

    def gas_cost(self, quote: str, base_fee_gwei: float, tip_gwei: float, fair_prices: Mapping[str, float]) -> float:
        """Return one swap's gas cost in `quote`."""
        gas_token = self.chain.gas_units_per_swap * (base_fee_gwei + tip_gwei) * 1e-9
        return gas_token * self.gas_token_price(quote, fair_prices)

    def step(self, now_ms: int, fair_prices: Mapping[str, float]) -> tuple[GasEvent, list[PoolEvent]]:
        """Mine one block at `now_ms`: its gas market, then each pool's noise swaps and arbitrage.

        Pools are seeded at the fair price of their first block; `fair_prices` must price every pool symbol.
        """
        if self._last_ms is not None and now_ms <= self._last_ms:
            raise ValueError(f"block time {now_ms} is not after the previous block's {self._last_ms}")
        dt_s = self.params.block_time_s if self._last_ms is None else (now_ms - self._last_ms) / 1_000.0
        self._last_ms = now_ms
        base_wei, gas_used, tip, _ = self._gas.next_block(now_ms, dt_s)
        base_gwei = base_wei / WEI_PER_GWEI
        tip = round(tip, 4)
        block = self.block
        self.block += 1
        gas = GasEvent(
            chain=self.chain.name,
            block=block,
            ts=now_ms,
            recv_ts=now_ms,
            base_fee_gwei=base_gwei,
            priority_fee_gwei=tip,
            gas_used_ratio=gas_used / self.params.gas_limit,
        )
        pools = []
        for pool in self._pools:
            symbol = pool.entry.symbol
            if symbol not in fair_prices:
                raise ValueError(f"no fair price for pool {symbol} of chain {self.chain.name}")
            fair = fair_prices[symbol]
            if pool.reserve_base == 0.0:
                pool.reserve_base = pool.entry.base_liquidity
                pool.reserve_quote = pool.entry.base_liquidity * fair
            pool.noise(self.params)
            if self.params.arbitrage:
                buys_base, size, profit = arbitrage_trade(
                    pool.reserve_base, pool.reserve_quote, pool.entry.fee_bps, fair
                )
                cost = self.gas_cost(pool.quote, base_gwei, tip, fair_prices)
                if profit > cost + self.params.arb_min_profit_quote:
                    pool.swap(buys_base, size)
            pools.append(
                PoolEvent(
                    chain=self.chain.name,
                    dex=self.params.dex,
                    pool=pool.address,
                    symbol=symbol,
                    base=pool.base,
                    quote=pool.quote,
                    reserve_base=pool.reserve_base,
                    reserve_quote=pool.reserve_quote,
                    fee_bps=pool.entry.fee_bps,
                    block=block,
                    ts=now_ms,
                    recv_ts=now_ms,
                )
            )
        return gas, pools
