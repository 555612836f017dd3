"""The local EVM chain: anvil from `chain/node_modules`, real Uniswap V2 pools and background activity."""
