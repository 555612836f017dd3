"""The local chain: real anvil from chain/node_modules, real Uniswap V2 and Vyper contracts, real web3.py.

No skips: without `make chain-deps` these tests fail and say what to run.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3

from bot.chain import contracts
from bot.chain.activity import ActivityConfig, burn_gas
from bot.chain.anvil import Anvil, ChainSetupError, anvil_binary
from bot.chain.deploy import Side, deploy_gas_burner, deploy_pool
from bot.chain.local import LocalChain, PoolSpec
from bot.chain.rpc import mine, rpc, settle

Web3 = AsyncWeb3[Any]
GAS_LIMIT = 2_000_000
GWEI = 10**9


@pytest.fixture(scope="module", autouse=True)
def _chain_packages() -> None:
    """Fail (never skip) with the fix when the npm packages are not installed."""
    try:
        anvil_binary()
        contracts.factory()
    except ChainSetupError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
async def node() -> AsyncIterator[Anvil]:
    """An anvil that mines only when told to (its interval is far longer than any test)."""
    async with Anvil(block_time=600, gas_limit=GAS_LIMIT, base_fee_wei=GWEI) as anvil:
        yield anvil


@pytest.fixture
async def w3(node: Anvil) -> AsyncIterator[Web3]:
    client = AsyncWeb3(AsyncHTTPProvider(node.http_url))
    try:
        yield client
    finally:
        await client.provider.disconnect()


def process_exists(pid: int) -> bool:
    """True while `/proc` lists `pid`, a zombie (dead, not yet reaped) included."""
    return Path(f"/proc/{pid}").exists()


def spec_next_base_fee(parent_base_fee: int, parent_gas_used: int, parent_gas_limit: int) -> int:
    """EIP-1559: a block's base fee from its parent, in the specification's integer arithmetic."""
    target = parent_gas_limit // 2  # ELASTICITY_MULTIPLIER = 2
    if parent_gas_used == target:
        return parent_base_fee
    if parent_gas_used > target:
        return parent_base_fee + max(parent_base_fee * (parent_gas_used - target) // target // 8, 1)
    return parent_base_fee - parent_base_fee * (target - parent_gas_used) // target // 8


def uniswap_v2_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """UniswapV2Library.getAmountOut: constant product, 0.3% off the input."""
    return amount_in * 997 * reserve_out // (reserve_in * 1000 + amount_in * 997)


async def get_blocks(w3: Web3, first: int, last: int) -> list[Any]:
    return [await w3.eth.get_block(n) for n in range(first, last + 1)]


async def wait_for_block(w3: Web3, number: int, timeout: float) -> None:  # noqa: ASYNC109 - a polling deadline
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await w3.eth.block_number < number:
        assert loop.time() < deadline, f"block {number} not mined within {timeout} s"
        await asyncio.sleep(0.05)


# -- installation ------------------------------------------------------------------------------------------


def test_missing_anvil_says_run_make_chain_deps(tmp_path: Path) -> None:
    with pytest.raises(ChainSetupError, match=r"make chain-deps"):
        anvil_binary(tmp_path / "node_modules")


def test_missing_uniswap_says_run_make_chain_deps(tmp_path: Path) -> None:
    with pytest.raises(ChainSetupError, match=r"make chain-deps"):
        contracts.uniswap_v2_artifact("UniswapV2Pair", tmp_path / "node_modules")


# -- the node ----------------------------------------------------------------------------------------------


async def test_anvil_mines_on_its_interval_and_stops_leaving_no_process() -> None:
    anvil = Anvil(block_time=0.2, gas_limit=GAS_LIMIT, base_fee_wei=GWEI)
    async with anvil:
        pid = anvil.pid
        assert pid is not None and process_exists(pid)
        w3 = AsyncWeb3(AsyncHTTPProvider(anvil.http_url))
        try:
            assert await w3.eth.chain_id == anvil.chain_id == 31337
            genesis = await w3.eth.get_block(0)
            assert (genesis["gasLimit"], genesis["baseFeePerGas"]) == (GAS_LIMIT, GWEI)
            await wait_for_block(w3, 3, timeout=5.0)
        finally:
            await w3.provider.disconnect()
    assert not anvil.running
    assert not process_exists(pid)


async def test_anvil_reports_a_failed_start(tmp_path: Path) -> None:
    fake = tmp_path / "anvil"
    fake.write_text("#!/bin/sh\necho 'error: this is not anvil' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(ChainSetupError, match=r"exited with code 3.*this is not anvil"):
        await Anvil(binary=fake).start()


# -- contracts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nonce_shift", [0, 1])
async def test_deploy_seeds_exact_raw_reserves_in_the_pairs_token_order(w3: Web3, nonce_shift: int) -> None:
    deployer = (await w3.eth.accounts)[0]
    if nonce_shift:  # tokens land at other addresses, and the pair sorts them the other way round
        await settle(w3, [await w3.eth.send_transaction({"from": deployer, "to": deployer, "value": 1})])
    pool = await deploy_pool(w3, price=3000.5, base_liquidity=1234.5)

    assert pool.base_is_token0 is (nonce_shift == 0)
    assert int(pool.token0, 16) < int(pool.token1, 16)
    pair = w3.eth.contract(address=pool.pair, abi=contracts.pair().abi)
    assert await pair.functions.token0().call() == pool.token0
    factory = w3.eth.contract(address=pool.factory, abi=contracts.factory().abi)
    assert await factory.functions.getPair(pool.base.address, pool.quote.address).call() == pool.pair

    for info, decimals, symbol in ((pool.base, 18, "WETH"), (pool.quote, 6, "USDT")):
        token = w3.eth.contract(address=info.address, abi=contracts.token().abi)
        assert await token.functions.decimals().call() == decimals
        assert await token.functions.symbol().call() == symbol

    base_raw, quote_raw = 1_234_500_000_000_000_000_000, 3_704_117_250_000  # 1234.5 WETH, 1234.5 × 3000.5 USDT
    reserve0, reserve1, _ = await pair.functions.getReserves().call()
    assert (reserve0, reserve1) == ((base_raw, quote_raw) if pool.base_is_token0 else (quote_raw, base_raw))
    assert await pool.reserves(w3) == (base_raw, quote_raw)


async def test_deploy_keeps_the_small_block_gas_limit_and_the_base_fee(w3: Web3) -> None:
    await deploy_pool(w3, price=2.0, base_liquidity=10.0)
    await mine(w3)
    latest = await w3.eth.get_block("latest")
    assert latest["gasLimit"] == GAS_LIMIT
    assert latest["baseFeePerGas"] == GWEI


@pytest.mark.parametrize("side", ["base_in", "quote_in"])
async def test_swap_moves_reserves_by_constant_product_with_fee(w3: Web3, side: Side) -> None:
    pool = await deploy_pool(w3, price=3000.0, base_liquidity=500.0)
    trader = (await w3.eth.accounts)[1]
    await pool.fund(w3, trader, base_raw=10**21, quote_raw=10**13)
    token_out = pool.quote if side == "base_in" else pool.base
    balance_out = w3.eth.contract(address=token_out.address, abi=contracts.token().abi).functions.balanceOf(trader)
    held_before = await balance_out.call()
    reserve_base, reserve_quote = await pool.reserves(w3)
    amount_in = 3 * 10**18 if side == "base_in" else 7_000 * 10**6

    result = await pool.swap(w3, side, amount_in, trader=trader, mine_now=True)

    if side == "base_in":
        expected_out = uniswap_v2_out(amount_in, reserve_base, reserve_quote)
        expected = (reserve_base + amount_in, reserve_quote - expected_out)
    else:
        expected_out = uniswap_v2_out(amount_in, reserve_quote, reserve_base)
        expected = (reserve_base - expected_out, reserve_quote + amount_in)
    assert result.amount_out == expected_out > 0
    assert await pool.reserves(w3) == expected
    assert await balance_out.call() == held_before + expected_out


async def test_one_raw_unit_more_than_the_formula_breaks_the_pairs_k_check(w3: Web3) -> None:
    pool = await deploy_pool(w3, price=3000.0, base_liquidity=500.0)
    trader = (await w3.eth.accounts)[1]
    await pool.fund(w3, trader, base_raw=10**21, quote_raw=0)
    reserve_base, reserve_quote = await pool.reserves(w3)
    amount_in = 2 * 10**18
    out = uniswap_v2_out(amount_in, reserve_base, reserve_quote)
    outs = (0, out) if pool.base_is_token0 else (out, 0)
    greedy = (0, out + 1) if pool.base_is_token0 else (out + 1, 0)
    base = w3.eth.contract(address=pool.base.address, abi=contracts.token().abi)
    pair = pool.pair_contract(w3)

    await settle(w3, [await base.functions.transfer(pool.pair, amount_in).transact({"from": trader})])
    too_much = await pair.functions.swap(*greedy, trader, b"").transact({"from": trader, "gas": 250_000})
    await mine(w3)
    assert (await w3.eth.wait_for_transaction_receipt(too_much))["status"] == 0
    # The input is still in the pair: the exact output goes through.
    await settle(w3, [await pair.functions.swap(*outs, trader, b"").transact({"from": trader, "gas": 250_000})])
    assert await pool.reserves(w3) == (reserve_base + amount_in, reserve_quote - out)


# -- fees --------------------------------------------------------------------------------------------------


async def test_full_blocks_raise_the_base_fee_and_empty_ones_lower_it_by_eip1559(w3: Web3) -> None:
    loader = (await w3.eth.accounts)[2]
    burner = await deploy_gas_burner(w3)
    first = await w3.eth.block_number
    # Three and a quarter blocks' worth of gas, mined block by block, then three empty blocks.
    hashes = await burn_gas(
        w3, burner, loader, 13 * GAS_LIMIT // 4, per_tx=GAS_LIMIT // 4, tip_wei=GWEI, max_fee_wei=10 * GWEI
    )
    assert len(hashes) == 13
    await mine(w3, 7)
    chain = await get_blocks(w3, first, first + 7)

    used = [block["gasUsed"] for block in chain[1:]]
    assert all(gas > 0.99 * GAS_LIMIT for gas in used[:3]), used
    assert 0 < used[3] < GAS_LIMIT // 2 and used[4:] == [0, 0, 0], used
    fees = [block["baseFeePerGas"] for block in chain]
    for parent, child in itertools.pairwise(chain):
        assert child["baseFeePerGas"] == spec_next_base_fee(
            parent["baseFeePerGas"], parent["gasUsed"], parent["gasLimit"]
        ), (parent["number"], parent["gasUsed"], fees)
    assert fees[2] > fees[1] * 1.12 and fees[3] > fees[2] * 1.12 and fees[4] > fees[3] * 1.12
    assert fees[5] < fees[4] and fees[7] == fees[6] - fees[6] // 8


# -- everything together -----------------------------------------------------------------------------------


async def test_local_chain_activity_moves_pools_and_base_fee_then_stops_everything() -> None:
    activity = ActivityConfig(
        seed=3, swap_probability=1.0, first_burst_after=2, burst_blocks=(3, 3), burst_every=(1000, 1000)
    )
    pools = [PoolSpec("ETH/USDT", 3400.0, 500.0), PoolSpec("ETH/USDT", 3400.0, 300.0, "sushiswap")]
    chain = LocalChain(pools, block_time=0.25, activity=activity)
    async with chain:
        pid = chain.anvil.pid
        assert pid is not None
        w3 = chain.w3
        # The first block after deployment carries the base fee the deployment saved, not the formula's.
        start = await w3.eth.block_number + 1
        await wait_for_block(w3, start + 14, timeout=15.0)
        chain_blocks = await get_blocks(w3, start, start + 14)
        receipts = [r for n in range(start, start + 15) for r in await w3.eth.get_block_receipts(n)]
        reserves = [await pool.deployed.reserves(w3) for pool in chain.pools]
        stats = chain.stats
        described = chain.describe()

    assert not process_exists(pid)
    assert stats.errors == 0 and stats.bursts == 1 and stats.swaps >= 5
    assert receipts and all(receipt["status"] == 1 for receipt in receipts)
    assert all(stats.swaps_by_pool.get(pool.address, 0) > 0 for pool in chain.pools)
    for pool, (base, quote) in zip(chain.pools, reserves, strict=True):
        assert (base, quote) != (pool.deployed.seed_base_raw, pool.deployed.seed_quote_raw)
    for parent, child in itertools.pairwise(chain_blocks):
        assert child["baseFeePerGas"] == spec_next_base_fee(
            parent["baseFeePerGas"], parent["gasUsed"], parent["gasLimit"]
        )
    fees = [block["baseFeePerGas"] for block in chain_blocks]
    # Full: no room left for another burner transaction. Seven burns and a swap (1.80M of 2M) are as full as
    # eight burns, and which of the two a block gets depends on how sending and mining interleave.
    full = [block["gasUsed"] > GAS_LIMIT - activity.burn_tx_gas for block in chain_blocks]
    assert sum(full) >= 2, [block["gasUsed"] for block in chain_blocks]
    assert any(b > a for a, b in itertools.pairwise(fees))
    assert any(b < a for a, b in itertools.pairwise(fees))
    assert described["ws_url"].startswith("ws://127.0.0.1:")
    assert [pool["dex"] for pool in described["pools"]] == ["uniswap_v2", "sushiswap"]
    assert described["token_aliases"] == {"WETH": "ETH"}


async def test_local_chain_start_failure_leaves_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = LocalChain([PoolSpec("ETH/USDT", 3400.0, 1.0)], block_time=None)
    pids: list[int | None] = []

    async def broken(*args: object, **kwargs: object) -> None:
        pids.append(chain.anvil.pid)
        raise RuntimeError("deployment failed on purpose")

    monkeypatch.setattr("bot.chain.local.deploy_pool", broken)
    with pytest.raises(RuntimeError, match="on purpose"):
        await chain.start()
    (pid,) = pids
    assert pid is not None and not process_exists(pid)
    assert not chain.anvil.running


async def test_rpc_reaches_anvil_methods(w3: Web3) -> None:
    await rpc(w3, "evm_setBlockGasLimit", hex(3_000_000))
    await mine(w3)
    assert (await w3.eth.get_block("latest"))["gasLimit"] == 3_000_000
