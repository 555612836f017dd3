"""A small HTTP server for probes and scrapes: `/healthz`, `/readyz` and `/metrics` (GET only).

One request per connection. A request head larger than `max_request_bytes`, or not complete within
`read_timeout_s`, is answered 431 / 408 and closed, and at most `max_connections` are served at once, so a
slow or malformed client cannot hold the server. It listens on loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from bot.observe.redact import Redactor

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787

Check = Callable[[], Awaitable[str | None]]
"""A readiness check: None when ready, else a short reason (raising counts as not ready too)."""

LINGER_S = 1.0
"""How long an error response waits for the client to stop sending before the connection is closed."""

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


class ListenError(RuntimeError):
    """The server could not bind its address (message says which and what to do)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one readiness check."""

    name: str
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True, slots=True)
class _Response:
    status: HTTPStatus
    body: bytes
    content_type: str = _TEXT
    headers: tuple[tuple[str, str], ...] = ()


class _BadRequest(ValueError):
    pass


class ObserveServer:
    """Serve `/healthz` (200 while the event loop runs), `/readyz` (every registered check passes, else 503 with
    the reasons as JSON) and `/metrics` (the `registry`, in the format the scraper asks for).

    Collection runs on the event loop, so metric sources read live objects without locks.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        check_timeout_s: float = 2.0,
        read_timeout_s: float = 5.0,
        max_request_bytes: int = 8192,
        max_connections: int = 32,
        redactor: Redactor | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self._registry = registry
        self._checks: dict[str, Check] = {}
        self._check_timeout_s = check_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_request_bytes = max_request_bytes
        self._max_connections = max_connections
        self._redactor = redactor or Redactor()
        self._server: asyncio.Server | None = None
        self._stopping = False
        self._handlers: set[asyncio.Task[None]] = set()
        self.requests: dict[int, int] = {}
        """Responses sent so far, by status code."""

    @property
    def port(self) -> int:
        """The port listened on (the one the OS picked when constructed with port 0)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def open_connections(self) -> int:
        """Connections being served right now."""
        return len(self._handlers)

    def add_check(self, name: str, check: Check) -> None:
        """Make `/readyz` depend on `check` (run with a timeout at each request, alongside the others)."""
        if name in self._checks:
            raise ValueError(f"a readiness check named {name!r} is already registered")
        self._checks[name] = check

    async def readiness(self) -> list[CheckResult]:
        """Run every check concurrently, each within the check timeout."""
        return list(await asyncio.gather(*(self._run_check(name, check) for name, check in self._checks.items())))

    async def start(self) -> None:
        """Listen on host:port; ListenError if the address cannot be bound."""
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self._port, limit=self._max_request_bytes)
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {self.host}:{self._port} for /healthz, /readyz and /metrics "
                f"({exc.strerror or exc}): free the port or set another HTTP port in the config"
            ) from None
        log.info("health and metrics on http://%s:%d (/healthz, /readyz, /metrics)", self.host, self.port)

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Stop listening and end the requests in progress, within about `timeout_s`."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._stopping = True
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                await server.wait_closed()
        except TimeoutError:
            log.warning("HTTP server: connections still open after %.1f s; leaving them to close", timeout_s)
        self._stopping = False

    async def __aenter__(self) -> ObserveServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- one connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            response = await self._answer(reader)
            if response is not None:
                await self._send(writer, response)
                if response.status >= HTTPStatus.BAD_REQUEST:
                    await self._linger(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stopped reading: nothing to tell it
        except asyncio.CancelledError:
            # stop() cancels the requests in progress; asyncio's stream callback would log a handler that ends
            # cancelled as an error, so end it quietly then. Any other cancellation goes on up.
            if not self._stopping:
                raise
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> _Response | None:
        if len(self._handlers) > self._max_connections:
            return _Response(HTTPStatus.SERVICE_UNAVAILABLE, b"too many connections\n", headers=(("Retry-After", "1"),))
        try:
            async with asyncio.timeout(self._read_timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return _Response(HTTPStatus.REQUEST_TIMEOUT, b"request not received in time\n")
        except asyncio.LimitOverrunError:
            return _Response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"request head too large\n")
        except asyncio.IncompleteReadError:
            return None  # closed before a whole request head
        try:
            method, target, headers = _parse_head(head)
        except _BadRequest as exc:
            return _Response(HTTPStatus.BAD_REQUEST, f"bad request: {exc}\n".encode())
        if method != "GET":
            return _Response(HTTPStatus.METHOD_NOT_ALLOWED, b"only GET is served\n", headers=(("Allow", "GET"),))
        return await self._route(urlsplit(target).path, headers)

    async def _route(self, path: str, headers: Mapping[str, str]) -> _Response:
        if path == "/healthz":
            return _Response(HTTPStatus.OK, b"ok\n")
        if path == "/readyz":
            return await self._ready()
        if path == "/metrics":
            return self._metrics(headers.get("accept", ""))
        return _Response(HTTPStatus.NOT_FOUND, b"not found: try /healthz, /readyz or /metrics\n")

    async def _ready(self) -> _Response:
        results = await self.readiness()
        ready = all(result.ok for result in results)
        checks = {r.name: {"ok": True} if r.ok else {"ok": False, "reason": r.reason} for r in results}
        body = orjson.dumps({"ready": ready, "checks": checks}) + b"\n"
        return _Response(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, body, _JSON)

    def _metrics(self, accept: str) -> _Response:
        encoder, content_type = choose_encoder(accept)
        try:
            body = encoder(self._registry)
        except Exception:  # a collector bug is a 500 for this scrape, not a dead server
            log.exception("metrics collection failed")
            return _Response(HTTPStatus.INTERNAL_SERVER_ERROR, b"metrics collection failed\n")
        return _Response(HTTPStatus.OK, body, content_type)

    async def _run_check(self, name: str, check: Check) -> CheckResult:
        try:
            async with asyncio.timeout(self._check_timeout_s) as scope:
                reason = await check()
        except TimeoutError:
            if not scope.expired():
                raise
            reason = f"no answer within {self._check_timeout_s:g} s"
        except Exception as exc:  # a failing check means not ready, never a failed request
            reason = f"{type(exc).__name__}: {exc}"
        return CheckResult(name, None if reason is None else self._redactor.text(reason))

    async def _send(self, writer: asyncio.StreamWriter, response: _Response) -> None:
        status = response.status
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Connection: close",
            "Cache-Control: no-store",
            *(f"{name}: {value}" for name, value in response.headers),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
        self.requests[status.value] = self.requests.get(status.value, 0) + 1
        async with asyncio.timeout(self._read_timeout_s):
            await writer.drain()

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Closing with unread input (an oversized head, a body) makes the kernel send a reset that can destroy
        # the error response before the client reads it: end our side, then drop input for a bounded time.
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(LINGER_S):
                while await reader.read(65536):
                    pass


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Method, target and lower-cased headers of a request head (ending with the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise _BadRequest("malformed request line")
    method, target, _version = parts
    if not target.startswith("/"):
        raise _BadRequest("the target must be a path")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _BadRequest("malformed header line")
        headers[name.lower()] = value.strip()
    return method, target, headers
