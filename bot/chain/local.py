"""The local chain as one piece: anvil, one Uniswap V2 pool per configured pair and DEX, background activity."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from eth_typing import ChecksumAddress
from web3 import AsyncHTTPProvider, AsyncWeb3

from bot.chain.activity import ActivityConfig, ActivityStats, run_activity
from bot.chain.anvil import GWEI, Anvil
from bot.chain.deploy import DeployedPool, DeployWindow, TokenInfo, deploy_gas_burner, deploy_pool
from bot.chain.rpc import Web3
from bot.tasks import TaskSet

TOKEN_DECIMALS = {"ETH": 18, "BTC": 8, "USDT": 6, "USDC": 6}
"""Decimals of each asset's token (others get 18), as on Ethereum mainnet."""
TOKEN_SYMBOLS = {"ETH": "WETH"}
"""On-chain symbol of an asset whose token is a wrapped one; `LocalChain.token_aliases` maps it back."""
TRADER_FUNDING = 10
"""The noise trader holds this many times each pool's seeded reserves."""


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A pool to deploy: canonical pair, seed price (quote per base) and depth, and the DEX it belongs to."""

    symbol: str
    price: float
    base_liquidity: float
    dex: str = "uniswap_v2"

    @property
    def base(self) -> str:
        """The canonical base asset."""
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        """The canonical quote asset."""
        return self.symbol.split("/")[1]


DEFAULT_POOLS = (
    PoolSpec("ETH/USDT", 3400.0, 500.0, "uniswap_v2"),
    PoolSpec("ETH/USDT", 3400.0, 300.0, "sushiswap"),
    PoolSpec("BTC/USDT", 97000.0, 20.0, "uniswap_v2"),
)
"""Two DEXes quoting ETH/USDT (room for `dex_dex`) and one BTC/USDT pool, at the demo simulator's prices."""


@dataclass(frozen=True, slots=True)
class ChainPool:
    """A deployed pool and the spec it came from."""

    spec: PoolSpec
    deployed: DeployedPool

    @property
    def dex(self) -> str:
        """The DEX name (one factory per DEX)."""
        return self.spec.dex

    @property
    def address(self) -> ChecksumAddress:
        """The pair's address."""
        return self.deployed.pair

    @property
    def symbol(self) -> str:
        """The canonical pair."""
        return self.spec.symbol

    @property
    def fee_bps(self) -> int:
        """The pair's swap fee."""
        return self.deployed.fee_bps


class LocalChain:
    """Start anvil, deploy the pools, fund a trader and run the activity; `stop()` or leaving `async with` ends it.

    Accounts (anvil's test mnemonic): 0 deploys and mints, 1 trades noise, 2 burns gas; 3 and up are free.
    """

    def __init__(
        self,
        pools: Sequence[PoolSpec] = DEFAULT_POOLS,
        *,
        block_time: float | None = 1.0,
        gas_limit: int = 2_000_000,
        base_fee_wei: int = GWEI,
        activity: ActivityConfig | None = None,
        with_activity: bool = True,
        reference: Callable[[str], float | None] | None = None,
    ) -> None:
        if not pools:
            raise ValueError("a local chain needs at least one pool")
        self.specs = tuple(pools)
        self.anvil = Anvil(block_time=block_time, gas_limit=gas_limit, base_fee_wei=base_fee_wei)
        self.activity_config = activity or ActivityConfig()
        self.with_activity = with_activity
        self.reference = reference
        self.stats = ActivityStats()
        self.pools: list[ChainPool] = []
        self.tokens: dict[str, TokenInfo] = {}
        self.factories: dict[str, ChecksumAddress] = {}
        self.burner: ChecksumAddress | None = None
        self.accounts: list[ChecksumAddress] = []
        self._w3: Web3 | None = None
        self._tasks = TaskSet()

    @property
    def w3(self) -> Web3:
        """An HTTP web3 client of the chain (open while the chain runs)."""
        if self._w3 is None:
            raise RuntimeError("the local chain is not running: call start() first")
        return self._w3

    @property
    def http_url(self) -> str:
        """JSON-RPC over HTTP."""
        return self.anvil.http_url

    @property
    def ws_url(self) -> str:
        """JSON-RPC over websocket."""
        return self.anvil.ws_url

    @property
    def chain_id(self) -> int:
        """The chain id."""
        return self.anvil.chain_id

    @property
    def deployer(self) -> ChecksumAddress:
        """Account 0: deployed every contract and mints the tokens."""
        return self.accounts[0]

    @property
    def trader(self) -> ChecksumAddress:
        """Account 1: sends the noise swaps."""
        return self.accounts[1]

    @property
    def loader(self) -> ChecksumAddress:
        """Account 2: burns gas."""
        return self.accounts[2]

    @property
    def token_aliases(self) -> dict[str, str]:
        """On-chain token symbol → canonical asset, for those that differ (WETH → ETH)."""
        return {token: asset for asset, token in TOKEN_SYMBOLS.items() if asset in self.tokens}

    async def start(self) -> None:
        """Start the node, deploy and seed every pool, and start the activity."""
        await self.anvil.start()
        try:
            self._w3 = AsyncWeb3(AsyncHTTPProvider(self.anvil.http_url))
            self.accounts = [self._w3.to_checksum_address(a) for a in await self._w3.eth.accounts]
            if len(self.accounts) < 3:
                raise RuntimeError("the local chain needs at least 3 accounts")
            async with DeployWindow(self._w3):
                for spec in self.specs:
                    self.pools.append(ChainPool(spec, await self._deploy(spec)))
                self.burner = await deploy_gas_burner(self._w3, deployer=self.deployer)
                for pool in self.pools:
                    await pool.deployed.fund(
                        self._w3,
                        self.trader,
                        base_raw=TRADER_FUNDING * pool.deployed.seed_base_raw,
                        quote_raw=TRADER_FUNDING * pool.deployed.seed_quote_raw,
                    )
            if self.with_activity:
                self.start_activity()
        except BaseException:
            await self.stop()
            raise

    def start_activity(self) -> None:
        """Start the background swaps and gas load (once)."""
        if len(self._tasks) or self.burner is None:
            return
        symbols = {pool.address: pool.symbol for pool in self.pools}
        reference = self.reference

        def reference_price(pool: DeployedPool) -> float | None:
            return reference(symbols[pool.pair]) if reference is not None else None

        coro = run_activity(
            self.w3,
            [pool.deployed for pool in self.pools],
            self.burner,
            trader=self.trader,
            loader=self.loader,
            config=self.activity_config,
            reference=reference_price,
            stats=self.stats,
        )
        self._tasks.spawn(coro, name="chain:activity")

    async def _deploy(self, spec: PoolSpec) -> DeployedPool:
        w3 = self.w3
        base, quote = self.tokens.get(spec.base), self.tokens.get(spec.quote)
        pool = await deploy_pool(
            w3,
            price=spec.price,
            base_liquidity=spec.base_liquidity,
            base_decimals=TOKEN_DECIMALS.get(spec.base, 18),
            quote_decimals=TOKEN_DECIMALS.get(spec.quote, 18),
            base_symbol=TOKEN_SYMBOLS.get(spec.base, spec.base),
            quote_symbol=TOKEN_SYMBOLS.get(spec.quote, spec.quote),
            base_token=base,
            quote_token=quote,
            factory=self.factories.get(spec.dex),
            deployer=self.deployer,
        )
        self.tokens[spec.base], self.tokens[spec.quote] = pool.base, pool.quote
        self.factories[spec.dex] = pool.factory
        return pool

    async def stop(self) -> None:
        """Stop the activity, close the client and stop the node (no process left behind)."""
        await self._tasks.cancel_all()
        if self._w3 is not None:
            await self._w3.provider.disconnect()
            self._w3 = None
        await self.anvil.stop()

    async def __aenter__(self) -> LocalChain:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def describe(self) -> dict[str, Any]:
        """Return what a client needs to use the chain, as plain JSON-able data."""
        return {
            "chain_id": self.chain_id,
            "http_url": self.http_url,
            "ws_url": self.ws_url,
            "block_time_s": self.anvil.block_time,
            "gas_limit": self.anvil.gas_limit,
            "accounts": {"deployer": self.deployer, "trader": self.trader, "loader": self.loader},
            "token_aliases": self.token_aliases,
            "tokens": {
                asset: {"address": token.address, "symbol": token.symbol, "decimals": token.decimals}
                for asset, token in self.tokens.items()
            },
            "pools": [
                {
                    "dex": pool.dex,
                    "symbol": pool.symbol,
                    "address": pool.address,
                    "fee_bps": pool.fee_bps,
                    "token0": pool.deployed.token0,
                    "token1": pool.deployed.token1,
                    "base_is_token0": pool.deployed.base_is_token0,
                    "seed_price": pool.spec.price,
                    "seed_reserve_base": pool.deployed.seed_base_raw / 10.0**pool.deployed.base.decimals,
                    "seed_reserve_quote": pool.deployed.seed_quote_raw / 10.0**pool.deployed.quote.decimals,
                }
                for pool in self.pools
            ],
        }


async def chain_up(
    pools: Sequence[PoolSpec] = DEFAULT_POOLS,
    *,
    block_time: float = 1.0,
    activity: ActivityConfig | None = None,
    duration_s: float | None = None,
    status_every_s: float | None = 10.0,
    echo: Callable[[str], None] = print,
    on_ready: Callable[[LocalChain], None] | None = None,
) -> None:
    """Run the local chain for `arbbot chain up`: print its URLs and pools, then status lines, until cancelled.

    Raises `ChainSetupError` (one line that says what to do) when anvil or the npm packages are missing.
    """
    async with LocalChain(pools, block_time=block_time, activity=activity) as chain:
        for line in summary_lines(chain):
            echo(line)
        if on_ready is not None:
            on_ready(chain)
        loop = asyncio.get_running_loop()
        deadline = None if duration_s is None else loop.time() + duration_s
        while deadline is None or loop.time() < deadline:
            wait = status_every_s or 3600.0
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
            await asyncio.sleep(max(wait, 0.0))
            if status_every_s is not None:
                echo(await status_line(chain))


def summary_lines(chain: LocalChain) -> list[str]:
    """Describe a running chain for people: URLs, accounts, tokens, pools."""
    lines = [
        f"local chain {chain.chain_id}: {chain.http_url}  {chain.ws_url}",
        f"  anvil: block time {chain.anvil.block_time} s, block gas limit {chain.anvil.gas_limit:,}, "
        f"initial base fee {chain.anvil.base_fee_wei / GWEI:g} gwei",
        f"  accounts (anvil's public test mnemonic): deployer {chain.deployer}, trader {chain.trader}, "
        f"gas loader {chain.loader}; accounts[3:] are free",
    ]
    for asset, token in chain.tokens.items():
        lines.append(f"  token {token.symbol:<5} {token.address}  decimals {token.decimals}  ({asset})")
    for pool in chain.pools:
        token0 = "base" if pool.deployed.base_is_token0 else "quote"
        lines.append(
            f"  pool {pool.dex} {pool.symbol} {pool.address}  fee {pool.fee_bps} bps  seeded at {pool.spec.price:g} "
            f"with {pool.spec.base_liquidity:g} {pool.spec.base}  (token0 is the {token0})"
        )
    return lines


async def status_line(chain: LocalChain) -> str:
    """Return one line on the chain's state now: block, base fee, gas used, activity counters."""
    block = await chain.w3.eth.get_block("latest")
    used = int(block["gasUsed"]) / int(block["gasLimit"])
    stats = chain.stats
    return (
        f"block {block['number']}  base fee {int(block.get('baseFeePerGas', 0)) / GWEI:.4f} gwei  gas used {used:.0%}  "
        f"swaps {stats.swaps}  bursts {stats.bursts}{' (on)' if stats.in_burst else ''}  errors {stats.errors}"
    )
