"""What gas costs: one formula for every on-chain strategy."""

from __future__ import annotations

from bot.events import GasEvent

ETH_PER_GWEI = 1e-9


def gas_cost_native(gas: GasEvent, gas_units: float) -> float:
    """Return the native-asset (ETH) cost of `gas_units` at the event's base fee plus tip."""
    return gas_units * (gas.base_fee_gwei + gas.priority_fee_gwei) * ETH_PER_GWEI
