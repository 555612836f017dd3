"""The local chain a config asks for (`chain.local: true`), seeded at the simulator's prices."""

from __future__ import annotations

from dataclasses import dataclass

from bot.chain.local import LocalChain, PoolSpec
from bot.config import RootConfig
from bot.feeds.chain import PoolConfig
from bot.signals_role import ChainEndpoint
from bot.sim.market import MarketSimulator


@dataclass(slots=True)
class ConfiguredChain:
    """A running local chain and the endpoint the chain feed uses to follow it."""

    chain: LocalChain
    endpoint: ChainEndpoint
    description: str


async def start_local_chain(config: RootConfig, simulator: MarketSimulator | None) -> ConfiguredChain:
    """Start anvil with a Uniswap V2 pool per `chain.local_pools` entry, seeded at the simulator's fair price;
    the background arbitrage pulls each pool toward the simulator's current fair price."""
    if config.chain is None:
        raise ValueError("the config has no chain section")

    def reference(symbol: str) -> float | None:
        return simulator.fair_price(symbol) if simulator is not None and symbol in simulator.symbols else None

    specs = []
    for entry in config.chain.local_pools:
        price = reference(entry.symbol)
        if price is None:
            raise ValueError(f"chain.local_pools: {entry.symbol} has no simulated price to seed the pool at")
        specs.append(PoolSpec(entry.symbol, price=price, base_liquidity=entry.base_liquidity))
    chain = LocalChain(specs, reference=reference)
    await chain.start()
    pools = tuple(PoolConfig(p.dex, str(p.address).lower(), p.symbol, float(p.fee_bps)) for p in chain.pools)
    described = ", ".join(f"{p.symbol} {p.address}" for p in chain.pools)
    endpoint = ChainEndpoint(chain.ws_url, pools, chain.token_aliases)
    return ConfiguredChain(chain, endpoint, f"Local chain (anvil) at {chain.ws_url}: pools {described}")
