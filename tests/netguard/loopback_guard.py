"""Refuse every network access from the test process except to loopback.

`install()` patches the socket module so that connecting or sending to a
non-loopback address, or resolving any name but `localhost`, raises `OSError`
at once. Allowed: 127.0.0.0/8, ::1, `localhost`, and AF_UNIX sockets.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

_MARK = "_arbbot_loopback_guard"
_LOCAL_NAMES = frozenset({"localhost", "localhost."})


def _blocked(target: object) -> OSError:
    return OSError(f"arbbot tests: network access to {target!r} blocked (loopback only)")


def is_loopback_host(host: object) -> bool:
    """Tell whether `host` names loopback without asking any resolver."""
    if isinstance(host, bytes | bytearray):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def check_address(family: int, address: Any) -> None:
    """Raise `OSError` unless a socket of `family` may reach `address`."""
    if family == getattr(socket, "AF_UNIX", None):
        return
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and address:
        if is_loopback_host(address[0]):
            return
        raise _blocked(address[0])
    raise _blocked(address)


def _check_host(host: Any) -> None:
    # None asks for the wildcard or loopback address: no lookup happens.
    if host is not None and not is_loopback_host(host):
        raise _blocked(host)


def _wrap(original: Callable[..., Any], guard: Callable[..., None]) -> Callable[..., Any]:
    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        guard(*args, **kwargs)
        return original(*args, **kwargs)

    setattr(guarded, _MARK, True)
    return guarded


def _guard_connect(sock: socket.socket, address: Any) -> None:
    check_address(sock.family, address)


def _guard_sendto(sock: socket.socket, data: Any, *rest: Any) -> None:
    # sendto(data, address) or sendto(data, flags, address)
    if rest:
        check_address(sock.family, rest[-1])


def _guard_resolve(host: Any, *args: Any, **kwargs: Any) -> None:
    _check_host(host)


def _guard_create_connection(address: Any, *args: Any, **kwargs: Any) -> None:
    _check_host(address[0])


def install() -> None:
    """Patch the socket module; calling it again does nothing."""
    if getattr(socket.socket.connect, _MARK, False):
        return
    for name in ("connect", "connect_ex"):
        setattr(socket.socket, name, _wrap(getattr(socket.socket, name), _guard_connect))
    socket.socket.sendto = _wrap(socket.socket.sendto, _guard_sendto)  # type: ignore[method-assign]
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex"):
        setattr(socket, name, _wrap(getattr(socket, name), _guard_resolve))
    socket.create_connection = _wrap(socket.create_connection, _guard_create_connection)
