"""The tests can reach loopback and nothing else, in subprocesses too."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

BLOCKED = "loopback only"

PUBLIC_ATTEMPTS: dict[str, Callable[[], object]] = {
    "getaddrinfo": lambda: socket.getaddrinfo("www.okx.com", 443),
    "gethostbyname": lambda: socket.gethostbyname("www.okx.com"),
    "getaddrinfo-public-ip": lambda: socket.getaddrinfo("1.1.1.1", 443),
    "create_connection-ip": lambda: socket.create_connection(("1.1.1.1", 443), timeout=5),
    "create_connection-name": lambda: socket.create_connection(("www.okx.com", 443), timeout=5),
}


@pytest.mark.parametrize("attempt", PUBLIC_ATTEMPTS.values(), ids=PUBLIC_ATTEMPTS.keys())
def test_public_lookups_and_connections_are_blocked(attempt: Callable[[], object]) -> None:
    with pytest.raises(OSError, match=BLOCKED):
        attempt()


@pytest.mark.parametrize("address", [("1.1.1.1", 443), ("www.okx.com", 443)])
def test_socket_connect_to_public_address_is_blocked(address: tuple[str, int]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(OSError, match=BLOCKED):
        sock.connect(address)


def test_connect_ex_and_sendto_to_public_address_are_blocked() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(OSError, match=BLOCKED):
        sock.connect_ex(("1.1.1.1", 443))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(OSError, match=BLOCKED):
        sock.sendto(b"\x00", ("8.8.8.8", 53))


async def test_asyncio_connection_to_public_address_is_blocked() -> None:
    with pytest.raises(OSError, match=BLOCKED):
        await asyncio.open_connection("1.1.1.1", 443)


@pytest.fixture
def loopback_listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_connections_work(loopback_listener: socket.socket, host: str) -> None:
    port = loopback_listener.getsockname()[1]
    with socket.create_connection((host, port), timeout=5) as client:
        peer, _ = loopback_listener.accept()
        with peer:
            client.sendall(b"ping")
            assert peer.recv(4) == b"ping"


def test_unix_socket_works(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            peer, _ = server.accept()
            with peer:
                client.sendall(b"ping")
                assert peer.recv(4) == b"ping"


def test_subprocess_is_guarded(subprocess_env: dict[str, str]) -> None:
    code = (
        "import socket\n"
        "for attempt in (lambda: socket.getaddrinfo('www.okx.com', 443),\n"
        "                lambda: socket.create_connection(('1.1.1.1', 443), timeout=5)):\n"
        "    try:\n"
        "        attempt()\n"
        "    except OSError as exc:\n"
        "        print(exc)\n"
        "    else:\n"
        "        print('not blocked')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert all(BLOCKED in line for line in lines), lines
