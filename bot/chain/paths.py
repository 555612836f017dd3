"""Where the chain's npm packages and contract sources live."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def chain_dir() -> Path:
    """Return the npm project folder (`$ARBBOT_CHAIN_DIR`, else `chain/` in the repository)."""
    return Path(os.environ.get("ARBBOT_CHAIN_DIR") or REPO_ROOT / "chain")


def node_modules() -> Path:
    """Return `chain/node_modules`, where `make chain-deps` installs anvil and Uniswap V2."""
    return chain_dir() / "node_modules"


def contracts_dir() -> Path:
    """Return the folder of the project's own Vyper contracts."""
    return REPO_ROOT / "contracts"
