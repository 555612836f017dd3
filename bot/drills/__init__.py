"""Fault drills (`arbbot drill NAME [--short]`): bounded in time, loopback only, each on a private Redis.

Each drill runs the real components (venue servers, ccxt.pro feeds, roles, redis-server), breaks something on
purpose, prints what it did and what it counted, and checks its invariants; `DrillReport.ok` is the verdict.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.bus.local_redis import RedisUnavailable
from bot.drills.report import Check, DrillReport, Say

log = logging.getLogger(__name__)

DrillRun = Callable[[DrillReport, bool, Path], Awaitable[None]]


def _venue_drops() -> DrillRun:
    from bot.drills.venue_drops import run_venue_drops

    return run_venue_drops


def _redis_restart() -> DrillRun:
    from bot.drills.redis_restart import run_redis_restart

    return run_redis_restart


def _malformed_flood() -> DrillRun:
    from bot.drills.malformed_flood import run_malformed_flood

    return run_malformed_flood


def _kill_roles() -> DrillRun:
    from bot.drills.kill_roles import run_kill_roles

    return run_kill_roles


DRILLS: dict[str, Callable[[], DrillRun]] = {
    "venue-drops": _venue_drops,
    "redis-restart": _redis_restart,
    "malformed-flood": _malformed_flood,
    "kill-roles": _kill_roles,
}
"""Drill name → loader of its run function (imported only when that drill runs)."""


SHORT_LIMIT_S = 180.0
FULL_LIMIT_S = 1_200.0


async def run_drill(name: str, short: bool, say: Say = print, limit_s: float | None = None) -> DrillReport:
    """Run drill `name` (its short form when `short`) in a temporary folder, within `limit_s` (default: 3 min short,
    20 min full); KeyError for an unknown name. A drill that overruns fails, and what its tasks were waiting on
    is logged."""
    run = DRILLS[name]()
    report = DrillReport(name, "short" if short else "full", say)
    limit = limit_s if limit_s is not None else SHORT_LIMIT_S if short else FULL_LIMIT_S
    with tempfile.TemporaryDirectory(prefix=f"arbbot-drill-{name}-") as workdir:
        watchdog = asyncio.get_running_loop().call_later(limit, _dump_tasks, name, limit)
        try:
            async with asyncio.timeout(limit):
                await run(report, short, Path(workdir))
        except RedisUnavailable:
            raise
        except TimeoutError:
            report.check("drill ran to the end", False, f"still running after {limit:.0f} s")
        except Exception as exc:
            # A drill that cannot finish has failed: say why in its report rather than lose the counts so far.
            log.exception("drill %s stopped early", name)
            report.check("drill ran to the end", False, f"{type(exc).__name__}: {exc}")
        finally:
            watchdog.cancel()
            report.finish()
    return report


def _dump_tasks(name: str, limit: float) -> None:
    """Log where every task of the overrunning drill is waiting (the drill is cancelled next)."""
    stacks = [f"  {task.get_name()}: {' > '.join(_awaiting(task.get_coro()))}" for task in asyncio.all_tasks()]
    log.error("drill %s overran %.0f s; tasks:\n%s", name, limit, "\n".join(sorted(stacks)))


def _awaiting(coro: object) -> list[str]:
    """The chain of coroutines `coro` is suspended in, outermost first (`name:line`)."""
    chain: list[str] = []
    while coro is not None and len(chain) < 20:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            chain.append(type(coro).__name__)
            break
        chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


__all__ = ["DRILLS", "Check", "DrillReport", "run_drill"]
