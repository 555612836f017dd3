"""Deploy a real Uniswap V2 pool of two ERC20 tokens on the local chain, and swap on it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3.contract import AsyncContract

from bot.chain import contracts
from bot.chain.contracts import Artifact
from bot.chain.rpc import Web3, created_address, mine, pending_nonce, rpc, settle, tx_params

V2_FEE_BPS = 30
"""Uniswap V2 charges 0.3% on the input, fixed in the pair's bytecode."""
DEPLOY_GAS_LIMIT = 30_000_000
"""Block gas limit while contracts are deployed: a pair's creation alone takes more than the chain's small one."""
# Generous fixed gas for transactions sent in one batch, before the state they depend on exists.
TOKEN_CALL_GAS = 100_000
PAIR_MINT_GAS = 300_000
PAIR_SWAP_GAS = 150_000

Side = Literal["base_in", "quote_in"]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """One ERC20 on the chain."""

    address: ChecksumAddress
    symbol: str
    decimals: int


@dataclass(frozen=True, slots=True)
class SwapResult:
    """A swap that the chain executed."""

    side: Side
    amount_in: int
    amount_out: int
    block: int
    tx_hash: str


def amount_out(amount_in: int, reserve_in: int, reserve_out: int, fee_bps: int = V2_FEE_BPS) -> int:
    """Return what a Uniswap V2 pair pays for `amount_in` (raw units): constant product after the fee."""
    if amount_in <= 0 or reserve_in <= 0 or reserve_out <= 0:
        raise ValueError("amount_in and both reserves must be positive")
    in_with_fee = amount_in * (10_000 - fee_bps)
    return in_with_fee * reserve_out // (reserve_in * 10_000 + in_with_fee)


def to_raw(amount: float | Decimal, decimals: int) -> int:
    """Convert token units to raw integer units (exact for decimal inputs such as 2.5 or 3000.1)."""
    return int(Decimal(str(amount)).scaleb(decimals))


@dataclass(frozen=True, slots=True)
class DeployedPool:
    """A Uniswap V2 pair with its tokens, as deployed; its methods read and trade on the live chain."""

    pair: ChecksumAddress
    factory: ChecksumAddress
    base: TokenInfo
    quote: TokenInfo
    token0: ChecksumAddress
    token1: ChecksumAddress
    deployer: ChecksumAddress
    fee_bps: int
    price: float
    """The price (quote per base) the pool was seeded at."""
    seed_base_raw: int
    seed_quote_raw: int

    @property
    def base_is_token0(self) -> bool:
        """True when the pair sorted the base token first."""
        return self.token0 == self.base.address

    def base_quote(self, raw0: int, raw1: int) -> tuple[int, int]:
        """Reorder raw (token0, token1) amounts as (base, quote)."""
        return (raw0, raw1) if self.base_is_token0 else (raw1, raw0)

    def pair_contract(self, w3: Web3) -> AsyncContract:
        """Return the pair bound to `w3`."""
        return w3.eth.contract(address=self.pair, abi=contracts.pair().abi)

    def token_contract(self, w3: Web3, token: TokenInfo) -> AsyncContract:
        """Return one of the pool's tokens bound to `w3`."""
        return w3.eth.contract(address=token.address, abi=contracts.token().abi)

    async def reserves(self, w3: Web3, block: int | Literal["latest"] = "latest") -> tuple[int, int]:
        """Return the raw (base, quote) reserves from `getReserves()`."""
        raw0, raw1, _ = await self.pair_contract(w3).functions.getReserves().call(block_identifier=block)
        return self.base_quote(int(raw0), int(raw1))

    async def fund(self, w3: Web3, account: str, *, base_raw: int, quote_raw: int) -> None:
        """Mint both tokens to `account` (the deployer mints) and wait until it is mined."""
        nonce = await pending_nonce(w3, self.deployer)
        hashes = []
        for token, amount in ((self.base, base_raw), (self.quote, quote_raw)):
            if amount > 0:
                call = self.token_contract(w3, token).functions.mint(w3.to_checksum_address(account), amount)
                hashes.append(await call.transact(tx_params(self.deployer, nonce=nonce, gas=TOKEN_CALL_GAS)))
                nonce += 1
        await settle(w3, hashes)

    async def send_swap(
        self,
        w3: Web3,
        side: Side,
        amount_in: int,
        *,
        trader: str | None = None,
        reserves: tuple[int, int] | None = None,
        nonce: int | None = None,
        tip_wei: int | None = None,
        max_fee_wei: int | None = None,
    ) -> tuple[int, list[HexBytes]]:
        """Send a swap (transfer in, then `pair.swap`) without waiting; return the expected output and the hashes.

        The output is priced on `reserves` (raw base, quote; read now if not given), so another swap on
        this pair mined between the read and this one makes it revert with `UniswapV2: K`.
        """
        sender = w3.to_checksum_address(trader or self.deployer)
        reserve_base, reserve_quote = reserves or await self.reserves(w3)
        base_in = side == "base_in"
        out = amount_out(amount_in, *((reserve_base, reserve_quote) if base_in else (reserve_quote, reserve_base)))
        if out <= 0:
            raise ValueError(f"{amount_in} raw units buy nothing from reserves {reserve_base}/{reserve_quote}")
        token_in = self.base if base_in else self.quote
        # The base goes out as token0 exactly when the quote comes in and the base is token0.
        out0, out1 = (0, out) if base_in == self.base_is_token0 else (out, 0)
        next_nonce = await pending_nonce(w3, sender) if nonce is None else nonce
        transfer = self.token_contract(w3, token_in).functions.transfer(self.pair, amount_in)
        swap = self.pair_contract(w3).functions.swap(out0, out1, sender, b"")
        hashes = []
        for call, gas in ((transfer, TOKEN_CALL_GAS), (swap, PAIR_SWAP_GAS)):
            params = tx_params(sender, nonce=next_nonce, gas=gas, tip_wei=tip_wei, max_fee_wei=max_fee_wei)
            hashes.append(await call.transact(params))
            next_nonce += 1
        return out, hashes

    async def swap(
        self, w3: Web3, side: Side, amount_in: int, *, trader: str | None = None, mine_now: bool = False
    ) -> SwapResult:
        """Swap `amount_in` raw units of the base (`base_in`) or the quote (`quote_in`) and wait until mined.

        With `mine_now` a block is mined at once instead of waiting for the next interval block.
        """
        out, hashes = await self.send_swap(w3, side, amount_in, trader=trader)
        receipts = await settle(w3, hashes, mine_now=mine_now)
        last = receipts[-1]
        return SwapResult(side, amount_in, out, int(last["blockNumber"]), last["transactionHash"].to_0x_hex())


async def deploy_contract(w3: Web3, artifact: Artifact, *args: Any, sender: str, nonce: int) -> HexBytes:
    """Send the creation of `artifact` with constructor `args`; return the transaction hash."""
    contract = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx_hash: HexBytes = await contract.constructor(*args).transact(tx_params(sender, nonce=nonce))
    return tx_hash


async def deploy_gas_burner(w3: Web3, *, deployer: str | None = None) -> ChecksumAddress:
    """Deploy `contracts/GasBurner.vy` and return its address."""
    sender = w3.to_checksum_address(deployer or (await w3.eth.accounts)[0])
    tx_hash = await deploy_contract(w3, contracts.gas_burner(), sender=sender, nonce=await pending_nonce(w3, sender))
    (receipt,) = await settle(w3, [tx_hash])
    return created_address(w3, receipt)


class DeployWindow:
    """Lift the block gas limit while contracts deploy, then restore it and the base fee as they were.

    The chain's small block gas limit cannot hold a pair's creation; the blocks mined meanwhile are
    nearly empty, and restoring the base fee keeps them from dragging it down.
    """

    def __init__(self, w3: Web3) -> None:
        self._w3 = w3
        self._gas_limit = 0
        self._base_fee = 0

    async def __aenter__(self) -> DeployWindow:
        latest = await self._w3.eth.get_block("latest")
        self._gas_limit = int(latest["gasLimit"])
        self._base_fee = int(latest.get("baseFeePerGas", 0))
        if self._gas_limit < DEPLOY_GAS_LIMIT:
            await rpc(self._w3, "evm_setBlockGasLimit", hex(DEPLOY_GAS_LIMIT))
            await mine(self._w3)  # web3 checks gas estimates against the latest block's limit
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._gas_limit < DEPLOY_GAS_LIMIT:
            await rpc(self._w3, "evm_setBlockGasLimit", hex(self._gas_limit))
        await rpc(self._w3, "anvil_setNextBlockBaseFeePerGas", hex(self._base_fee))


async def deploy_pool(
    w3: Web3,
    *,
    price: float,
    base_liquidity: float,
    base_decimals: int = 18,
    quote_decimals: int = 6,
    fee_bps: int = V2_FEE_BPS,
    base_symbol: str = "WETH",
    quote_symbol: str = "USDT",
    base_token: TokenInfo | None = None,
    quote_token: TokenInfo | None = None,
    factory: ChecksumAddress | None = None,
    deployer: str | None = None,
) -> DeployedPool:
    """Deploy the tokens (unless given), a factory (unless given) and a pair; seed it at `price` (quote per base).

    Seeding mints `base_liquidity` base and `base_liquidity * price` quote to the deployer, transfers them
    to the pair and calls `mint`, so `getReserves()` holds exactly those raw amounts. Tokens and a factory
    passed in (to share them between pools) must come from the same `deployer`, who mints.
    """
    if fee_bps != V2_FEE_BPS:
        raise ValueError(f"Uniswap V2 pairs charge {V2_FEE_BPS} bps, fixed in their bytecode; got fee_bps={fee_bps}")
    if price <= 0 or base_liquidity <= 0:
        raise ValueError("price and base_liquidity must be positive")
    sender = w3.to_checksum_address(deployer or (await w3.eth.accounts)[0])
    async with DeployWindow(w3):
        # 1. Tokens and factory, in one block.
        wanted = {
            "base": (base_token, base_symbol, base_decimals),
            "quote": (quote_token, quote_symbol, quote_decimals),
        }
        tokens = {key: given for key, (given, _, _) in wanted.items() if given is not None}
        nonce = await pending_nonce(w3, sender)
        sent: dict[str, HexBytes] = {}
        for key, (given, symbol, decimals) in wanted.items():
            if given is None:
                args = (f"Local {symbol}", symbol, decimals)
                sent[key] = await deploy_contract(w3, contracts.token(), *args, sender=sender, nonce=nonce)
                nonce += 1
        if factory is None:
            sent["factory"] = await deploy_contract(w3, contracts.factory(), sender, sender=sender, nonce=nonce)
        receipts = await settle(w3, list(sent.values()))
        created = {key: created_address(w3, r) for key, r in zip(sent, receipts, strict=True)}
        for key, (_, symbol, decimals) in wanted.items():
            if key in created:
                tokens[key] = TokenInfo(created[key], symbol, decimals)
        base, quote = tokens["base"], tokens["quote"]
        factory_address = created.get("factory") or w3.to_checksum_address(str(factory))
        base_raw = to_raw(base_liquidity, base.decimals)
        quote_raw = to_raw(Decimal(str(base_liquidity)) * Decimal(str(price)), quote.decimals)
        # 2. The pair.
        factory_contract = w3.eth.contract(address=factory_address, abi=contracts.factory().abi)
        tx_hash = await factory_contract.functions.createPair(base.address, quote.address).transact(tx_params(sender))
        await settle(w3, [tx_hash])
        pair_address = w3.to_checksum_address(
            await factory_contract.functions.getPair(base.address, quote.address).call()
        )
        pair = w3.eth.contract(address=pair_address, abi=contracts.pair().abi)
        token0 = w3.to_checksum_address(await pair.functions.token0().call())
        token1 = w3.to_checksum_address(await pair.functions.token1().call())
        pool = DeployedPool(
            pair_address, factory_address, base, quote, token0, token1, sender, fee_bps, price, base_raw, quote_raw
        )
        # 3. Liquidity: mint to the deployer, transfer both to the pair, `mint` LP tokens: one block.
        nonce = await pending_nonce(w3, sender)
        hashes = []
        for token, amount in ((base, base_raw), (quote, quote_raw)):
            functions = pool.token_contract(w3, token).functions
            for call in (functions.mint(sender, amount), functions.transfer(pair_address, amount)):
                hashes.append(await call.transact(tx_params(sender, nonce=nonce, gas=TOKEN_CALL_GAS)))
                nonce += 1
        hashes.append(await pair.functions.mint(sender).transact(tx_params(sender, nonce=nonce, gas=PAIR_MINT_GAS)))
        await settle(w3, hashes)
    return pool
