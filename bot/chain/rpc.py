"""Small helpers over web3.py v8 for the local chain: raw RPC calls, sending, mining, waiting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.types import Nonce, RPCEndpoint, TxParams, TxReceipt, Wei

Web3 = AsyncWeb3[Any]
"""Any async web3 client: HTTP for deployment and activity, websocket for feeds."""


class TransactionFailed(RuntimeError):
    """A transaction the local chain was asked to run reverted."""


async def rpc(w3: Web3, method: str, *params: Any) -> Any:
    """Call a JSON-RPC method by name (anvil's `evm_*` / `anvil_*` included) and return its result."""
    return await w3.manager.coro_request(RPCEndpoint(method), list(params))


async def mine(w3: Web3, blocks: int = 1) -> None:
    """Mine `blocks` blocks now, with whatever the pool holds (interval mining goes on as before)."""
    for _ in range(blocks):
        await rpc(w3, "evm_mine")


async def pending_nonce(w3: Web3, account: str) -> int:
    """Return the next nonce of `account`, counting the transactions still in the pool."""
    return int(await w3.eth.get_transaction_count(w3.to_checksum_address(account), "pending"))


def tx_params(
    sender: str,
    *,
    nonce: int | None = None,
    gas: int | None = None,
    tip_wei: int | None = None,
    max_fee_wei: int | None = None,
) -> TxParams:
    """Build the fields of a transaction from an unlocked account; web3 fills whatever is left out."""
    params: TxParams = {"from": sender}
    if nonce is not None:
        params["nonce"] = Nonce(nonce)
    if gas is not None:
        params["gas"] = gas
    if tip_wei is not None:
        params["maxPriorityFeePerGas"] = Wei(tip_wei)
    if max_fee_wei is not None:
        params["maxFeePerGas"] = Wei(max_fee_wei)
    return params


async def settle(
    w3: Web3, hashes: Sequence[HexBytes], *, mine_now: bool = True, timeout_s: float = 30.0
) -> list[TxReceipt]:
    """Mine a block now (unless told not to), wait for every receipt, and raise if any reverted."""
    if mine_now and hashes:
        await mine(w3)
    receipts = [await w3.eth.wait_for_transaction_receipt(h, timeout=timeout_s, poll_latency=0.02) for h in hashes]
    for receipt in receipts:
        if receipt["status"] != 1:
            raise TransactionFailed(f"transaction {receipt['transactionHash'].to_0x_hex()} reverted")
    return receipts


def created_address(w3: Web3, receipt: TxReceipt) -> ChecksumAddress:
    """Return the address of the contract a receipt created."""
    address = receipt.get("contractAddress")
    if address is None:
        raise TransactionFailed(f"transaction {receipt['transactionHash'].to_0x_hex()} created no contract")
    return w3.to_checksum_address(address)
