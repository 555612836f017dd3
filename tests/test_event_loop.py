"""The daemon's event loop: uvloop by default, the standard loop on request."""

from __future__ import annotations

import asyncio

import pytest

from bot import event_loop
from bot.config import DaemonConfig


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize(("kind", "module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_run_uses_the_loop_the_config_names(kind: event_loop.EventLoopKind, module: str) -> None:
    assert event_loop.run(_loop_module(), kind).split(".")[0] == module


def test_the_daemon_defaults_to_uvloop() -> None:
    assert DaemonConfig().event_loop == "uvloop"
