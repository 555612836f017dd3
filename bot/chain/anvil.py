"""Run anvil (installed by `make chain-deps` under `chain/node_modules`) on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

import aiohttp

from bot.chain.paths import node_modules

MNEMONIC = "test test test test test test test test test test test junk"
"""Anvil's well-known test mnemonic: the accounts and their keys are public, never use them elsewhere."""
DEFAULT_CHAIN_ID = 31337
GWEI = 10**9
HOST = "127.0.0.1"

# (sys.platform, machine) → the npm package that ships that build of anvil.
_PLATFORM_PACKAGES = {
    ("linux", "x86_64"): "anvil-linux-amd64",
    ("linux", "amd64"): "anvil-linux-amd64",
    ("linux", "aarch64"): "anvil-linux-arm64",
    ("linux", "arm64"): "anvil-linux-arm64",
    ("darwin", "x86_64"): "anvil-darwin-amd64",
    ("darwin", "arm64"): "anvil-darwin-arm64",
}
_PORT_ATTEMPTS = 3


class ChainSetupError(RuntimeError):
    """The local chain cannot run; the message says what to do."""


def anvil_binary(modules: Path | None = None) -> Path:
    """Return the anvil executable under `chain/node_modules`, or say how to install it."""
    root = (modules or node_modules()) / "@foundry-rs"
    machine = platform.machine().lower()
    package = _PLATFORM_PACKAGES.get((sys.platform, machine))
    if package is None:
        raise ChainSetupError(f"no anvil build is set up for {sys.platform}/{machine}: add its @foundry-rs package")
    path = root / package / "bin" / "anvil"
    if not path.is_file():
        raise ChainSetupError(f"anvil is not installed ({path} is missing): run `make chain-deps` (npm ci in chain/)")
    if not os.access(path, os.X_OK):
        raise ChainSetupError(f"{path} is not executable: run `make chain-deps` again")
    return path


def _die_with_parent() -> list[str]:
    """Return a prefix that makes Linux stop the node if this process dies without stopping it (SIGKILL)."""
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    # setpriv sets the parent-death signal, then execs anvil in its place (same pid).
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Anvil:
    """An anvil node on 127.0.0.1 that this process owns: `async with Anvil() as node`, or `start()` / `stop()`.

    `block_time` (seconds, fractions allowed) mines a block on that interval, empty or not; `None` mines
    each transaction at once in its own block. A small `gas_limit` lets bursts of transactions fill
    blocks, so the EIP-1559 base fee (starting at `base_fee_wei`) moves. State lives in memory only.
    """

    def __init__(
        self,
        *,
        block_time: float | None = 1.0,
        gas_limit: int = 2_000_000,
        base_fee_wei: int = GWEI,
        chain_id: int = DEFAULT_CHAIN_ID,
        accounts: int = 10,
        mnemonic: str = MNEMONIC,
        history_states: int = 256,
        binary: Path | None = None,
        startup_timeout_s: float = 10.0,
    ) -> None:
        if block_time is not None and block_time <= 0:
            raise ValueError("block_time must be positive (or None to mine each transaction at once)")
        if gas_limit < 21_000 or base_fee_wei < 0 or accounts < 1 or history_states < 1:
            raise ValueError("gas_limit must be at least 21000, base_fee_wei ≥ 0, accounts and history_states ≥ 1")
        self.block_time = block_time
        self.gas_limit = gas_limit
        self.base_fee_wei = base_fee_wei
        self.chain_id = chain_id
        self.accounts = accounts
        self.mnemonic = mnemonic
        self.history_states = history_states
        self._binary = binary
        self._startup_timeout_s = startup_timeout_s
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._port: int | None = None

    def command(self, binary: Path, port: int) -> list[str]:
        """Return the command line that starts this node on `port`."""
        args = [*_die_with_parent(), str(binary), "--host", HOST, "--port", str(port), "--silent"]
        args += ["--chain-id", str(self.chain_id), "--accounts", str(self.accounts), "--mnemonic", self.mnemonic]
        args += ["--gas-limit", str(self.gas_limit), "--base-fee", str(self.base_fee_wei)]
        # Keep recent states in memory and write none to disk.
        args += ["--prune-history", str(self.history_states)]
        if self.block_time is not None:
            args += ["--block-time", f"{self.block_time:g}"]
        return args

    @property
    def port(self) -> int:
        """The TCP port the node listens on."""
        if self._port is None:
            raise RuntimeError("anvil is not running: call start() first")
        return self._port

    @property
    def http_url(self) -> str:
        """JSON-RPC over HTTP."""
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        """JSON-RPC over websocket (subscriptions: newHeads, logs)."""
        return f"ws://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while the node runs."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """True while the process this object started is alive."""
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        """Start the node and return once it answers `eth_chainId` (bounded by `startup_timeout_s`)."""
        if self._process is not None:
            raise RuntimeError("anvil is already started")
        binary = self._binary or anvil_binary()
        for _ in range(_PORT_ATTEMPTS):
            port = _free_port()
            log = tempfile.TemporaryFile(prefix="arbbot-anvil-")  # noqa: SIM115 - open as long as anvil runs
            try:
                process = await asyncio.create_subprocess_exec(
                    *self.command(binary, port),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=log,
                )
            except OSError as exc:
                log.close()
                raise ChainSetupError(f"cannot run {binary}: {exc}; run `make chain-deps` again") from exc
            self._process, self._log, self._port = process, log, port
            try:
                failure = await self._wait_ready()
            except BaseException:
                self._kill_now()
                raise
            if failure is None:
                return
            output = self._output()
            await self.stop()
            if "address already in use" not in output.lower():
                raise ChainSetupError(f"anvil did not start: {failure}{': ' + output if output else ''}")
        raise ChainSetupError(f"anvil found no free port on {HOST} in {_PORT_ATTEMPTS} attempts")

    async def _wait_ready(self) -> str | None:
        """Poll `eth_chainId` until it answers; return why it failed, or None."""
        assert self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._startup_timeout_s
        request = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if self._process.returncode is not None:
                    return f"it exited with code {self._process.returncode}"
                try:
                    async with session.post(self.http_url, json=request) as response:
                        answer = await response.json()
                    chain_id = int(answer["result"], 16)
                    if chain_id != self.chain_id:
                        return f"it answered chain id {chain_id}, not {self.chain_id}"
                    return None
                except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                    pass
                if loop.time() > deadline:
                    return f"no answer to eth_chainId on {self.http_url} within {self._startup_timeout_s:g} s"
                await asyncio.sleep(0.02)

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        lines = self._log.read().decode("utf-8", "replace").strip().splitlines()
        return " | ".join(lines[-5:])

    async def stop(self) -> None:
        """Terminate the node (kill it if it lingers) and wait for it: no orphan process."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
                await process.wait()
            except asyncio.CancelledError:
                process.kill()
                self._close_log()
                raise
        elif process is not None:
            await process.wait()
        self._close_log()

    def _kill_now(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        self._port = None

    async def __aenter__(self) -> Anvil:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
