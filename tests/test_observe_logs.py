"""Logging setup: JSON lines or console lines, stdlib and structlog alike, secrets never written."""

from __future__ import annotations

import io
import logging
import os
import select
import time
from collections.abc import Iterator

import orjson
import pytest
import structlog

from bot.observe.logs import get_logger, setup_logging
from bot.observe.redact import Redactor

SECRET = "s1gning-k3y-value"
PASSWORD = "hunter2-redis"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    structlog.reset_defaults()


def emit_everything() -> None:
    """Log the secret every way the code can: stdlib args, structlog key-values, exception text."""
    url = f"redis://arb:{PASSWORD}@10.0.0.5:6379/0"
    logging.getLogger("bot.bus").warning("connecting to %s with key %s", url, SECRET)
    get_logger("bot.risk").info("halted", key=SECRET, config={"redis": {"url": url}}, tries=3)
    try:
        raise ValueError(f"signature check failed with {SECRET}")
    except ValueError:
        logging.getLogger("bot.paper").exception("decision rejected")


def test_json_lines_when_not_a_terminal_and_secrets_are_masked() -> None:
    out = io.StringIO()
    setup_logging(secrets=[SECRET], stream=out)
    emit_everything()
    text = out.getvalue()
    assert SECRET not in text
    assert PASSWORD not in text
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("bot.bus", "warning"),
        ("bot.risk", "info"),
        ("bot.paper", "error"),
    ]
    assert lines[0]["event"] == "connecting to redis://arb:***@10.0.0.5:6379/0 with key ***"
    assert lines[1]["key"] == "***"
    assert lines[1]["config"] == {"redis": {"url": "redis://arb:***@10.0.0.5:6379/0"}}
    assert lines[1]["tries"] == 3
    assert lines[2]["exception"].startswith("Traceback")
    assert lines[2]["exception"].endswith("ValueError: signature check failed with ***")
    assert all(line["timestamp"].endswith("Z") for line in lines)


def test_console_lines_on_a_terminal_and_secrets_are_masked() -> None:
    master, replica = os.openpty()
    with os.fdopen(replica, "w") as terminal:
        setup_logging(secrets=[SECRET], stream=terminal)
        emit_everything()
        logging.getLogger("bot.test").warning("end of output")
        text = read_until(master, "end of output")
    os.close(master)
    assert SECRET not in text
    assert PASSWORD not in text
    assert "connecting to redis://arb:***@10.0.0.5:6379/0" in text
    assert "decision rejected" in text
    assert "ValueError: signature check failed with ***" in text
    assert not text.lstrip().startswith("{")


def read_until(fd: int, marker: str, timeout_s: float = 10.0) -> str:
    """Read a terminal's output until `marker` shows (a pty hands it over in chunks)."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while marker.encode() not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{marker!r} not written within {timeout_s} s; got {data!r}"
        if select.select([fd], [], [], remaining)[0]:
            data += os.read(fd, 1 << 16)
    return data.decode()


def test_forced_console_format_without_a_terminal_has_no_colour_codes() -> None:
    out = io.StringIO()
    setup_logging(json=False, stream=out)
    logging.getLogger("bot.feeds").warning("venue %s stale", "alpha")
    line = out.getvalue()
    assert "venue alpha stale" in line
    assert "[bot.feeds]" in line
    assert "\x1b[" not in line
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(line)


def test_level_filters_both_kinds_of_logger() -> None:
    out = io.StringIO()
    setup_logging(json=True, level="WARNING", stream=out)
    logging.getLogger("bot.x").info("quiet")
    get_logger("bot.y").info("quiet too")
    get_logger("bot.y").warning("loud")
    assert [orjson.loads(line)["event"] for line in out.getvalue().splitlines()] == ["loud"]


def test_setting_up_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging(json=True, stream=first)
    setup_logging(json=True, stream=second)
    logging.getLogger("bot.z").warning("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("redis://user:pa55@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://:pa55@host/1", "rediss://:***@host/1"),
        ("url=redis://u:p@ss@host/0 next", "url=redis://u:***@host/0 next"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("http://user@host/", "http://user@host/"),
        ("key abc and abcdef", "key *** and ***"),
    ],
)
def test_redactor(text: str, masked: str) -> None:
    assert Redactor(["abc", "abcdef", ""]).text(text) == masked
