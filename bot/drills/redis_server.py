"""A private `redis-server` the drills can stop (SIGTERM or SIGKILL) and start again on the same port and data.

Durability: `appendonly yes` with `appendfsync always` in a temporary folder. Redis appends every write to its
AOF and fsyncs it before it replies, so every write a client saw acknowledged survives SIGKILL; SIGTERM also
flushes and closes cleanly. RDB snapshots are off (`save ""`): the AOF alone is replayed at start.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import tempfile
from pathlib import Path

from bot.bus.local_redis import RedisUnavailable, redis_answers


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


DURABILITY = "appendonly yes, appendfsync always (each acknowledged write is fsynced to the AOF first)"


class DurableRedis:
    """`start()`, `stop(sig)`, `start()` again: same port, same AOF; `close()` stops it and removes its folder."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.starts = 0
        self._workdir = tempfile.TemporaryDirectory(prefix="arbbot-drill-redis-")
        self._process: asyncio.subprocess.Process | None = None

    @property
    def folder(self) -> Path:
        """Where the AOF and the log live."""
        return Path(self._workdir.name)

    @property
    def running(self) -> bool:
        """The server process is alive."""
        return self._process is not None and self._process.returncode is None

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start redis-server (replaying its AOF) and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable("the drills need redis-server on PATH (e.g. `apt-get install redis-server`)")
        log = (self.folder / "redis.log").open("ab")
        try:
            self._process = await asyncio.create_subprocess_exec(
                binary,
                *("--bind", "127.0.0.1", "--port", str(self.port), "--dir", self._workdir.name),
                *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
                *("--loglevel", "notice"),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not await redis_answers(self.url, 0.5):
            if self._process.returncode is not None or loop.time() > deadline:
                raise RedisUnavailable(
                    f"redis-server on port {self.port} did not start; see {self.folder / 'redis.log'}"
                )
            await asyncio.sleep(0.05)
        self.starts += 1

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
        """Send `sig` and wait for the server to exit; its exit code (None if it was not running)."""
        process = self._process
        if process is None or process.returncode is not None:
            return None
        process.send_signal(sig)
        try:
            return await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            process.kill()
            return await process.wait()

    async def close(self) -> None:
        """Stop the server if it runs and delete its data."""
        await self.stop(signal.SIGTERM)
        self._workdir.cleanup()
