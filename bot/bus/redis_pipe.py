"""A Redis connection written to from the caller's own stack: a command is on the wire when `write` returns.

redis-py's asyncio client writes from a coroutine, after a connection health check that yields to the event loop:
under load each such turn waits behind every other ready callback (the feeds' frames), and a signal leaves the
process hundreds of microseconds after it was made. The publisher writes through this pipe instead; a task of the
pipe's own reads the replies, in order, and hands each to `on_reply`.

The pipe is opened with the settings of a redis-py client's connection pool (host and port or Unix socket, TLS
context, ACL user and password, database, client name), so that it reaches the Redis the client reaches, as the
client would. It speaks RESP2 and parses replies with hiredis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, InvalidResponse, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.tasks import cancel_and_wait

log = logging.getLogger(__name__)

READ_CHUNK = 65_536
CONNECT_TIMEOUT_S = 5.0

Arg = bytes | str | int


def pack(*args: Arg) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RedisPipe:
    """One open connection; `write` is synchronous, replies go to `on_reply` (a ResponseError for an error reply),
    and `on_lost(error)` is called once when the connection ends (never after `close`)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_reply: Callable[[Any], None],
        on_lost: Callable[[BaseException], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_reply = on_reply
        self._on_lost = on_lost
        self._parser = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self._closed = False
        self._reading = asyncio.get_running_loop().create_task(self._read(), name="redis-pipe-reader")

    @classmethod
    async def open(
        cls,
        client: aioredis.Redis,
        on_reply: Callable[[Any], None],
        on_lost: Callable[[BaseException], None],
    ) -> RedisPipe:
        """Connect as `client`'s pool would, authenticate and select the database; RedisError (AuthenticationError
        for refused credentials, ConnectionError when nothing answers) otherwise."""
        settings = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]  # read, never connected
        timeout = getattr(settings, "socket_connect_timeout", None) or CONNECT_TIMEOUT_S
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await _connect(settings)
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis ({type(exc).__name__}: {exc})") from exc
        try:
            async with asyncio.timeout(timeout):
                await _handshake(settings, reader, writer)
        except (OSError, TimeoutError) as exc:
            writer.close()
            raise RedisConnectionError(f"Redis connection lost while logging in ({type(exc).__name__}: {exc})") from exc
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, on_reply, on_lost)

    @property
    def up(self) -> bool:
        return not self._closed

    @property
    def buffered_bytes(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return self._writer.transport.get_write_buffer_size()

    def write(self, data: bytes) -> None:
        """Put `data` (packed commands) on the wire now."""
        if self._closed:
            raise RedisConnectionError("the Redis pipe is closed")
        self._writer.write(data)

    async def drain(self) -> None:
        """Wait until the kernel has taken what was written (RedisConnectionError if the connection ended)."""
        try:
            await self._writer.drain()
        except OSError as exc:
            raise RedisConnectionError(f"Redis connection lost ({exc})") from exc

    def abort(self) -> None:
        """Stop using the connection now (an error reply, a stalled Redis); `on_lost` is not called."""
        if not self._closed:
            self._closed = True
            self._writer.close()

    async def close(self) -> None:
        """Close the connection; `on_lost` is not called."""
        self._closed = True
        await cancel_and_wait(self._reading)
        self._writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self._writer.wait_closed()

    async def _read(self) -> None:
        error: BaseException
        try:
            while data := await self._reader.read(READ_CHUNK):
                self._parser.feed(data)
                while (reply := self._parser.gets()) is not False:
                    self._on_reply(reply)
                    if self._closed:  # on_reply gave up on this connection
                        return
            error = RedisConnectionError("Redis closed the connection")
        except (OSError, InvalidResponse) as exc:
            error = RedisConnectionError(f"Redis connection lost ({type(exc).__name__}: {exc})")
        if not self._closed:
            self._closed = True
            self._writer.close()
            self._on_lost(error)


async def _connect(settings: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    path = getattr(settings, "path", None)
    if path:
        return await asyncio.open_unix_connection(path)
    ssl_context = getattr(settings, "ssl_context", None)
    return await asyncio.open_connection(
        settings.host, settings.port, ssl=ssl_context.get() if ssl_context is not None else None
    )


async def _handshake(settings: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """AUTH, SELECT and CLIENT SETNAME as the pool's connections send them; raise on the first refusal."""
    username, password = settings.username, settings.password
    if settings.credential_provider is not None:
        username, password = (None, *await settings.credential_provider.get_credentials_async())[-2:]
    commands: list[tuple[str, bytes]] = []
    if password is not None:
        commands.append(("AUTH", pack("AUTH", username, password) if username else pack("AUTH", password)))
    if settings.db:
        commands.append(("SELECT", pack("SELECT", settings.db)))
    if settings.client_name:
        commands.append(("CLIENT SETNAME", pack("CLIENT", "SETNAME", settings.client_name)))
    if not commands:
        return
    writer.write(b"".join(packed for _, packed in commands))
    await writer.drain()
    parser = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
    for name, _ in commands:
        while (reply := parser.gets()) is False:
            data = await reader.read(READ_CHUNK)
            if not data:
                raise RedisConnectionError(f"Redis closed the connection during {name}")
            parser.feed(data)
        if isinstance(reply, ResponseError):
            if name == "AUTH":
                raise AuthenticationError(str(reply))
            raise reply
        if isinstance(reply, RedisError):
            raise reply
