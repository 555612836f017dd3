"""`arbbot bench all`: every benchmark of issue 7 in one run, one JSON, one README table.

Parts (`--only` picks some):
- `throughput`: book updates/s through ccxt.pro + arbbot's pipeline on one core vs ccxt.pro's own parse rate of the
  same frames, with the rule scorer and with the model scorer (bot.bench.feeds, in a one-thread child process);
- `scaling`: µs per update through the engine as venues × symbols grow, both scorers (the same child);
- `latency`: tick → signal across processes beside raw Redis pub/sub (bot.bench.latency);
- `rss`: the signals role's memory over a long run (bot.bench.rss).

Every figure is reported beside its goal; a goal is only reported, never enforced.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bot.bench.books import MarketShape
from bot.bench.latency import LatencySettings, measure_latency
from bot.bench.machine import describe
from bot.bench.procs import Worker
from bot.bench.rss import RssSettings, measure_rss
from bot.bus.local_redis import LocalRedis
from bot.config import DEMO_CONFIG_PATH

PARTS = ("throughput", "scaling", "latency", "rss")
DEFAULT_MODEL_DIR = DEMO_CONFIG_PATH.parent.parent / "models"
FEEDS_TIMEOUT_S = 1_800.0

SHORT_LATENCY = LatencySettings(duration_s=2.0, warmup_s=1.0, grace_s=0.5)
SHORT_RSS = RssSettings(shape=MarketShape(venues=3, symbols=5), duration_s=3.0, warmup_s=1.0, sample_s=1.0)


@dataclass(frozen=True, slots=True)
class AllSettings:
    """Which parts run, and how."""

    parts: tuple[str, ...] = PARTS
    short: bool = False
    latency: LatencySettings = field(default_factory=LatencySettings)
    rss: RssSettings = field(default_factory=RssSettings)
    model_dir: Path | None = DEFAULT_MODEL_DIR
    """The model scorer's folder (cex_cex.npz); None leaves the model scorer out."""
    redis_url: str | None = None
    """None: a private redis-server on loopback, started and stopped by the run."""


def settings(
    short: bool = False,
    only: Sequence[str] | None = None,
    rate_per_s: float | None = None,
    latency_duration_s: float | None = None,
    rss_duration_s: float | None = None,
    model_dir: Path | None = DEFAULT_MODEL_DIR,
    redis_url: str | None = None,
) -> AllSettings:
    """Build the run's settings: the full run, or `short` (seconds, for a test), with overrides."""
    parts = tuple(only) if only else PARTS
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        raise ValueError(f"unknown parts {unknown} (known: {', '.join(PARTS)})")
    latency = SHORT_LATENCY if short else LatencySettings()
    rss = SHORT_RSS if short else RssSettings()
    scorers = ("rule", "model") if model_dir is not None else ("rule",)
    latency = replace(latency, model_dir=model_dir, scorers=scorers)
    rss = replace(rss, model_dir=model_dir, scorer="model" if model_dir is not None else "rule")
    if rate_per_s is not None:
        latency = replace(latency, rate_per_s=rate_per_s)
        rss = replace(rss, rate_per_s=rate_per_s)
    if latency_duration_s is not None:
        latency = replace(latency, duration_s=latency_duration_s)
    if rss_duration_s is not None:
        rss = replace(rss, duration_s=rss_duration_s, sample_s=min(rss.sample_s, rss_duration_s))
    return AllSettings(parts, short, latency, rss, model_dir, redis_url)


def run_all(run: AllSettings, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the chosen parts in an event loop of their own and return the JSON-ready result."""
    return asyncio.run(_run_all(run, progress))


async def _run_all(run: AllSettings, progress: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "all",
        "short": run.short,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parts": list(run.parts),
        "machine": describe(),  # before the run: its load average says whether other work shared the machine
    }
    with tempfile.TemporaryDirectory(prefix="arbbot-bench-") as folder:
        workdir = Path(folder)
        if "throughput" in run.parts or "scaling" in run.parts:
            scorers = "rule and model scorers" if run.model_dir is not None else "rule scorer"
            progress(f"throughput and scaling: ccxt.pro alone vs ccxt.pro + arbbot, {scorers}")
            feeds = await _feeds(run, workdir)
            if "throughput" in run.parts:
                result["throughput"] = throughput(feeds)
            if "scaling" in run.parts:
                result["scaling"] = scaling(feeds)
        if "latency" in run.parts or "rss" in run.parts:
            local = await LocalRedis.start() if run.redis_url is None else None
            url = local.url if local is not None else str(run.redis_url)
            watch = {"redis": local.process.pid} if local is not None else {}
            try:
                result["machine"]["redis"] = await _redis_version(url)
                if "latency" in run.parts:
                    progress(
                        f"latency: raw Redis, then tick → signal with {' and '.join(run.latency.scorers)} scorer, "
                        f"{run.latency.duration_s:.0f} s each at {run.latency.rate_per_s:,.0f} updates/s"
                    )
                    result["tick_to_signal"] = await measure_latency(run.latency, url, workdir, watch)
                if "rss" in run.parts:
                    shape = run.rss.shape
                    progress(
                        f"rss: {shape.venues} venues × {shape.symbols} symbols, {shape.levels}-level books, "
                        f"{run.rss.duration_s:.0f} s after a {run.rss.warmup_s:.0f} s warm-up"
                    )
                    result["rss"] = await measure_rss(run.rss, url, workdir, watch)
            finally:
                if local is not None:
                    await local.stop()
    result["machine"]["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    result["goals"] = goals(result)
    return result


async def _feeds(run: AllSettings, workdir: Path) -> dict[str, Any]:
    spec = {"quick": run.short, "model_dir": str(run.model_dir) if run.model_dir is not None else None}
    worker = await Worker.start("feeds", spec, workdir, one_thread=True)
    try:
        await worker.ready(60.0)
        return await worker.result(FEEDS_TIMEOUT_S)
    finally:
        await worker.close()


async def _redis_version(url: str) -> str:
    client = aioredis.from_url(url)
    try:
        info = await client.info("server")
        return str(info.get("redis_version", "unknown"))
    finally:
        await client.aclose()


# --- figures from the feeds benchmark -------------------------------------------------------------


def _rate(rows: Mapping[str, Mapping[str, Any]], key: str) -> float:
    """Updates/s over every protocol's frames together (total frames / total time)."""
    frames = sum(float(row["frames"]) for row in rows.values())
    seconds = sum(float(row["frames"]) / float(row[key]) for row in rows.values())
    return frames / seconds


def throughput(feeds: Mapping[str, Any]) -> dict[str, Any]:
    """The `throughput` section: all protocols' frames together, then each protocol, both scorers."""
    rows = feeds["protocols"]
    ccxt = _rate(rows, "ccxt_per_s")
    pipeline = _rate(rows, "pipeline_per_s")
    section: dict[str, Any] = {
        "pipeline_per_s": round(pipeline, 1),
        "ccxt_per_s": round(ccxt, 1),
        "ratio": round(pipeline / ccxt, 4),
        "pipeline_us_per_update": round(1e6 / pipeline, 2),
        "frames_per_protocol": min(row["frames"] for row in rows.values()),
        "protocols": {name: dict(row) for name, row in rows.items()},
    }
    model = feeds.get("model_scorer")
    if model:
        model_rows = {name: {**model["protocols"][name], "frames": rows[name]["frames"]} for name in rows}
        model_rate = _rate(model_rows, "pipeline_per_s")
        section["model"] = {
            "name": model["model"],
            "pipeline_per_s": round(model_rate, 1),
            "ratio": round(model_rate / ccxt, 4),
            "pipeline_us_per_update": round(1e6 / model_rate, 2),
            "extra_us_per_update": round(1e6 / model_rate - 1e6 / pipeline, 2),
            "lstm_us_per_update": _mean(model["protocols"], "lstm_us_per_update"),
            "scored_per_update": _mean(model["protocols"], "scored_per_update"),
            "lstm_us_per_batch": _mean(model["protocols"], "lstm_us_per_batch"),
        }
        for name, row in model["protocols"].items():
            section["protocols"][name]["model"] = row
    return section


def _mean(rows: Mapping[str, Mapping[str, Any]], key: str) -> float:
    return round(sum(float(row[key]) for row in rows.values()) / len(rows), 4)


def scaling(feeds: Mapping[str, Any]) -> dict[str, Any]:
    """The `scaling` section: µs per update per point, and how flat it stays (both scorers)."""
    points = [dict(point) for point in feeds["scaling"]]
    model = feeds.get("model_scorer")
    model_points = {(p["venues"], p["symbols"]): p for p in model["scaling"]} if model else {}
    for point in points:
        point["us_per_evaluation"] = round(point["us_per_update"] / point["evaluations_per_update"], 3)
        if (found := model_points.get((point["venues"], point["symbols"]))) is not None:
            point["model"] = found
    section: dict[str, Any] = {"points": points, **_flatness(points, lambda p: p["us_per_update"])}
    if model_points:
        section["model"] = _flatness(points, lambda p: p["model"]["us_per_update"])
    return section


def _flatness(points: Sequence[Mapping[str, Any]], cost: Callable[[Mapping[str, Any]], float]) -> dict[str, float]:
    """`symbols_growth`: the largest rise in µs/update from fewer to more symbols at one venue count;
    `per_evaluation_growth`: µs per venue-pair evaluation at the largest point ÷ at the smallest."""
    by_venues: dict[int, list[Mapping[str, Any]]] = {}
    for point in points:
        by_venues.setdefault(point["venues"], []).append(point)
    rises = [
        cost(max(group, key=lambda p: p["symbols"])) / cost(min(group, key=lambda p: p["symbols"]))
        for group in by_venues.values()
        if len(group) > 1
    ]
    first, last = points[0], points[-1]
    per_evaluation = (cost(last) / last["evaluations_per_update"]) / (cost(first) / first["evaluations_per_update"])
    return {
        "symbols_growth": round(max(rises), 3) if rises else 1.0,
        "per_evaluation_growth": round(per_evaluation, 3),
    }


# --- goals ----------------------------------------------------------------------------------------

GOALS: tuple[tuple[str, str, str, float], ...] = (
    ("tick_to_signal.p50_ms", "tick → signal p50 (ms), rule scorer", "max", 0.5),
    ("tick_to_signal.p99_ms", "tick → signal p99 (ms), rule scorer", "max", 2.0),
    ("tick_to_signal.p50_vs_raw_redis", "tick → signal p50 ÷ raw Redis p50, rule scorer", "max", 4.0),
    ("tick_to_signal.by_scorer.model.p50_ms", "tick → signal p50 (ms), model scorer", "max", 0.5),
    ("tick_to_signal.by_scorer.model.p99_ms", "tick → signal p99 (ms), model scorer", "max", 2.0),
    ("tick_to_signal.by_scorer.model.p50_vs_raw_redis", "tick → signal p50 ÷ raw Redis p50, model scorer", "max", 4.0),
    ("throughput.ratio", "pipeline ÷ ccxt.pro parse rate", "min", 0.5),
    ("throughput.model.ratio", "pipeline ÷ ccxt.pro, model scorer", "min", 0.5),
    ("scaling.symbols_growth", "µs/update, most ÷ fewest symbols", "max", 1.25),
    ("scaling.per_evaluation_growth", "µs per pair evaluation, 10 × 50 ÷ 2 × 1", "max", 1.25),
    ("rss.end_mb", "RSS at the end (MB)", "max", 400.0),
    ("rss.growth_pct", "RSS growth over the run (%)", "max", 5.0),
)
"""(JSON path, label, "max" or "min", limit). Flat scaling is read as: within 25 % (the machine's noise is ±15 %)."""


def lookup(result: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of the result, or None."""
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def goals(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each goal whose figure the run measured: value, limit, value ÷ limit, met."""
    rows = []
    for path, label, kind, limit in GOALS:
        value = lookup(result, path)
        if not isinstance(value, int | float):
            continue
        met = value <= limit if kind == "max" else value >= limit
        goal = f"{'≤' if kind == 'max' else '≥'} {limit:g}"
        rows.append(
            {
                "figure": path,
                "label": label,
                "value": value,
                "goal": goal,
                "of_goal": round(value / limit, 3),
                "met": met,
            }
        )
    return rows
