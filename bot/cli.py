"""The `arbbot` command line (also `python -m bot`)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import orjson
import redis.asyncio as aioredis
import typer
from redis.exceptions import RedisError
from rich.console import Console

from bot.bus.codec import DecodeError, json_schemas
from bot.bus.local_redis import RedisUnavailable
from bot.bus.redis_url import redact_url
from bot.bus.subscriber import follow
from bot.config import DEMO_CONFIG_PATH, ConfigError, EnvOverrides, load_config
from bot.messages import Message

app = typer.Typer(add_completion=False, no_args_is_help=True, help="arbbot: crypto arbitrage signals on Redis.")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _fail(message: str, code: int = 2) -> typer.Exit:
    print(f"arbbot: {message}", file=sys.stderr)
    return typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def demo(
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds (default: until Ctrl-C)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the run summary as JSON here")] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="config file")] = DEMO_CONFIG_PATH,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run simulated venues, ccxt.pro feeds, strategy, scorer and Redis publisher on this machine."""
    from bot.demo import run_demo, summary_table, write_summary

    _setup_logging(verbose)
    if duration is not None and duration <= 0:
        raise _fail("--duration must be positive")
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if cfg.simulator is None:
        raise _fail(f"{config}: the demo needs a simulator section and simulated venues")
    console = Console(highlight=False, soft_wrap=True)
    try:
        summary = asyncio.run(run_demo(cfg, duration, console))
    except RedisUnavailable as exc:
        raise _fail(str(exc)) from None
    console.print(summary_table(summary))
    if json_path is not None:
        write_summary(summary, json_path)
        console.print(f"summary written to {json_path}")


@app.command()
def subscribe(
    pattern: Annotated[str, typer.Argument(help="channel pattern, e.g. 'arb:signal:*'")],
    count: Annotated[int | None, typer.Option(help="exit after this many valid messages")] = None,
) -> None:
    """Print messages from channels matching PATTERN as JSON lines; malformed ones are skipped and counted."""
    url = EnvOverrides().redis_url or DEFAULT_REDIS_URL
    if count is not None and count <= 0:
        raise _fail("--count must be positive")
    try:
        rejected = asyncio.run(_subscribe(url, pattern, count))
    except (RedisError, OSError) as exc:
        raise _fail(f"cannot reach Redis at {redact_url(url)} ({exc}); is it running? set ARBBOT_REDIS_URL") from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if rejected:
        print(f"arbbot subscribe: {rejected} malformed message(s) skipped", file=sys.stderr)


async def _subscribe(url: str, pattern: str, count: int | None) -> int:
    client = aioredis.from_url(url)
    expected = "signal" if ":signal:" in pattern else None

    def on_message(payload: bytes, _message: Message) -> None:
        sys.stdout.write(payload.decode() + "\n")
        sys.stdout.flush()

    def on_reject(_payload: bytes, error: DecodeError) -> None:
        print(f"arbbot subscribe: skipped malformed message ({error})", file=sys.stderr, flush=True)

    def on_ready() -> None:
        print(f"arbbot subscribe: listening on {pattern} at {redact_url(url)}", file=sys.stderr, flush=True)

    try:
        stats = await follow(client, pattern, on_message, on_reject, count, expected, on_ready)
    finally:
        await client.aclose()
    return stats.rejected


@app.command()
def schema() -> None:
    """Print the JSON Schemas of the messages and events."""
    sys.stdout.write(orjson.dumps(json_schemas(), option=orjson.OPT_INDENT_2).decode() + "\n")


def main() -> None:
    """Entry point of the `arbbot` console script."""
    app()
