"""Find a Redis to talk to, or start a private `redis-server` on a free loopback port."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError


class RedisUnavailable(RuntimeError):
    """No Redis answers and none could be started; the message says what to do."""


async def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """True if a Redis at `url` answers PING within `timeout_s`."""
    client = aioredis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LocalRedis:
    """A `redis-server` this process started; `stop()` ends it."""

    process: asyncio.subprocess.Process
    url: str
    workdir: tempfile.TemporaryDirectory[str]

    @classmethod
    async def start(cls, timeout_s: float = 10.0) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable(
                "no Redis answers and there is no redis-server on PATH: install Redis "
                "(e.g. `apt-get install redis-server`) or set ARBBOT_REDIS_URL"
            )
        port = _free_port()
        workdir = tempfile.TemporaryDirectory(prefix="arbbot-redis-")
        process = await asyncio.create_subprocess_exec(
            binary,
            *("--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"),
            *("--dir", workdir.name, "--loglevel", "warning"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        local = cls(process, f"redis://127.0.0.1:{port}/0", workdir)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not await redis_answers(local.url, 0.5):
            if process.returncode is not None or loop.time() > deadline:
                await local.stop()
                raise RedisUnavailable(f"redis-server on port {port} did not start")
            await asyncio.sleep(0.05)
        return local

    async def stop(self) -> None:
        """Terminate the server (kill it if it lingers) and remove its folder."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.workdir.cleanup()
