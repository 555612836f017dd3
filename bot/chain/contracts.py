"""Contract artifacts (ABI and creation bytecode): the project's Vyper sources and Uniswap V2 from npm."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vyper

from bot.chain.anvil import ChainSetupError
from bot.chain.paths import contracts_dir, node_modules


@dataclass(frozen=True, slots=True)
class Artifact:
    """What it takes to deploy and call one contract."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str  # creation code, 0x-prefixed hex


@functools.cache
def vyper_artifact(name: str) -> Artifact:
    """Compile `contracts/{name}.vy` with the pinned Vyper (once per process; it takes ~50 ms)."""
    path = contracts_dir() / f"{name}.vy"
    output = vyper.compile_code(
        path.read_text(encoding="utf-8"), contract_path=path, output_formats=["abi", "bytecode"]
    )
    return Artifact(name, list(output["abi"]), str(output["bytecode"]))


@functools.cache
def uniswap_v2_artifact(name: str, modules: Path | None = None) -> Artifact:
    """Load `UniswapV2Factory` or `UniswapV2Pair` as built by the `@uniswap/v2-core` npm package."""
    path = (modules or node_modules()) / "@uniswap" / "v2-core" / "build" / f"{name}.json"
    if not path.is_file():
        raise ChainSetupError(
            f"{path} is missing: run `make chain-deps` (npm ci in chain/) to install @uniswap/v2-core"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    code = str(data["evm"]["bytecode"]["object"])
    return Artifact(name, list(data["abi"]), code if code.startswith("0x") else "0x" + code)


def token() -> Artifact:
    """Return the minimal ERC20 (`contracts/Token.vy`)."""
    return vyper_artifact("Token")


def gas_burner() -> Artifact:
    """Return the block filler (`contracts/GasBurner.vy`)."""
    return vyper_artifact("GasBurner")


def factory() -> Artifact:
    """Return the Uniswap V2 factory."""
    return uniswap_v2_artifact("UniswapV2Factory")


def pair() -> Artifact:
    """Return the Uniswap V2 pair."""
    return uniswap_v2_artifact("UniswapV2Pair")
