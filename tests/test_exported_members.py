"""The curated public API: `bot.__all__` is pinned, and every name in it imports from `bot`."""

from __future__ import annotations

import importlib

import bot

EXPECTED = [
    "BookEvent",
    "Channels",
    "ConfigError",
    "Costs",
    "DecodeError",
    "RootConfig",
    "Signal",
    "TradeEvent",
    "decode_event",
    "decode_message",
    "encode",
    "load_config",
]


def test_all_is_pinned() -> None:
    assert bot.__all__ == EXPECTED


def test_all_is_sorted_without_duplicates() -> None:
    assert bot.__all__ == sorted(set(bot.__all__))


def test_every_exported_name_is_importable() -> None:
    module = importlib.import_module("bot")
    for name in EXPECTED:
        member = getattr(module, name)
        assert member is not None, name
        namespace: dict[str, object] = {}
        exec(f"from bot import {name}", namespace)
        assert namespace[name] is member


def test_exported_members_are_public_objects_of_the_package() -> None:
    for name in EXPECTED:
        member = getattr(bot, name)
        assert member.__module__.startswith("bot."), f"{name} comes from {member.__module__}"
        assert member.__doc__, f"{name} has no docstring"
