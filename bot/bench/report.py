"""Markdown tables of a `bench all` result, for the terminal and README's Benchmarks section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_report(result: Mapping[str, Any]) -> str:
    """Render the goals table, then one table per part the run measured, then the machine line."""
    lines = ["| figure | measured | goal | measured ÷ goal | met |", "|---|---:|---|---:|---|"]
    for row in result["goals"]:
        lines.append(
            f"| {row['label']} | {_figure(row['value'])} | {row['goal']} | {row['of_goal']:.2f} "
            f"| {'yes' if row['met'] else '**no**'} |"
        )
    for part in (_latency, _throughput, _scaling, _rss):
        block = part(result)
        if block:
            lines += ["", *block]
    lines += ["", _machine_line(result)]
    return "\n".join(lines) + "\n"


def _figure(value: float) -> str:
    """Three significant digits without an exponent."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _latency(result: Mapping[str, Any]) -> list[str]:
    section = result.get("tick_to_signal")
    if not section:
        return []
    lines = [
        f"Tick → signal at {section['rate_per_s']:,.0f} book updates/s ({section['venues']} venues × "
        f"{section['symbols']} symbols, {section['duration_s']:g} s per row):",
        "",
        "| path | p50 ms | p99 ms | p99.9 ms | max ms | signals | updates/s | CPU % signals · venues · others "
        "| role CPU µs/update |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for scorer, row in section["by_scorer"].items():
        cpu = row["cpu_pct"]
        lines.append(
            f"| venue → ccxt.pro → arbbot ({scorer} scorer) → Redis → subscriber | {row['p50_ms']:.3f} "
            f"| {row['p99_ms']:.3f} | {row['p999_ms']:.3f} | {row['max_ms']:.2f} | {row['samples']:,} "
            f"| {row['rate_per_s']:,.0f} | {cpu['signals']:.0f} · {cpu['venues']:.0f} · {cpu['others']:.0f} "
            f"| {cpu_us_per_update(cpu['signals'], row['rate_per_s']):.0f} |"
        )
    raw = section["raw_redis"]
    dropped = {scorer: row["role"]["dropped"] for scorer, row in section["by_scorer"].items()}
    lines.append(
        f"| raw Redis PUBLISH → PSUBSCRIBE | {raw['p50_ms']:.3f} | {raw['p99_ms']:.3f} | {raw['p999_ms']:.3f} "
        f"| {raw['max_ms']:.2f} | {raw['samples']:,} | {raw['rate_per_s']:,.0f} | |"
    )
    lines += ["", _role_line("In the signals role", {s: row["role"] for s, row in section["by_scorer"].items()})]
    missing = {scorer: row["triggering_without_signal"] for scorer, row in section["by_scorer"].items()}
    if any(missing.values()):
        counts = ", ".join(
            f"{count:,} of {section['by_scorer'][s]['triggering_updates']:,} ({s})" for s, count in missing.items()
        )
        lines += [
            "",
            f"Crossing or uncrossing updates with no signal within {section['grace_s']:g} s: {counts}.",
        ]
    if any(dropped.values()):
        counts = ", ".join(f"{count:,} ({scorer})" for scorer, count in dropped.items())
        lines += ["", f"Signals or updates the signals role dropped (a full queue): {counts}."]
    return lines


def cpu_us_per_update(cpu_pct: float, updates_per_s: float) -> float:
    """CPU time a process spent per book update sent to it, from its share of a core and the update rate."""
    return cpu_pct / 100.0 / updates_per_s * 1e6 if updates_per_s > 0 else 0.0


def _role_line(head: str, roles: Mapping[str, Mapping[str, Any]]) -> str:
    """How late the role's event loop ran and how far its publishers fell behind, per run."""
    parts = [
        f"{role['loop_lag_p50_ms']:.1f} ms at p50, {role['loop_lag_max_ms']:,.0f} ms at most, signal queue up to "
        f"{role['signal_queue_max']:,}, book queue up to {role['market_queue_max']:,} ({name})"
        for name, role in roles.items()
    ]
    return f"{head}, a 100 ms timer ran late by " + "; ".join(parts) + "."


def _throughput(result: Mapping[str, Any]) -> list[str]:
    section = result.get("throughput")
    if not section:
        return []
    model = section.get("model")
    head = "| protocol | ccxt.pro alone (frames/s) | + arbbot, rule (updates/s) | ratio |"
    rule = "|---|---:|---:|---:|"
    if model:
        head += " + arbbot, model (updates/s) | ratio | LSTM-scored per update |"
        rule += "---:|---:|---:|"
    lines = [f"Throughput on one core, {section['frames_per_protocol']:,} real frames per protocol:", "", head, rule]
    rows = dict(section["protocols"])
    rows["all"] = {
        "ccxt_per_s": section["ccxt_per_s"],
        "pipeline_per_s": section["pipeline_per_s"],
        "ratio": section["ratio"],
        "model": model,
    }
    for name, row in rows.items():
        line = f"| {name} | {row['ccxt_per_s']:,.0f} | {row['pipeline_per_s']:,.0f} | {row['ratio']:.2f} |"
        if model:
            m = row["model"]
            line += f" {m['pipeline_per_s']:,.0f} | {m['ratio']:.2f} | {m['scored_per_update']:.3f} |"
        lines.append(line)
    if model:
        lines += [
            "",
            f"The model scorer ({model['name']}) adds {model['extra_us_per_update']:.1f} µs per update, of which the "
            f"LSTM itself is {model['lstm_us_per_update']:.1f} µs ({model['lstm_us_per_batch']:.0f} µs per batch, "
            f"{model['scored_per_update']:.3f} evaluations scored per update); the rest is feature tracking.",
        ]
    return lines


def _scaling(result: Mapping[str, Any]) -> list[str]:
    section = result.get("scaling")
    if not section:
        return []
    with_model = "model" in section
    head = "| venues × symbols | pair evaluations/update | rule µs/update | µs/evaluation |"
    rule = "|---|---:|---:|---:|"
    if with_model:
        head += " model µs/update | LSTM µs/update |"
        rule += "---:|---:|"
    lines = ["Engine cost per update as venues × symbols grow:", "", head, rule]
    for point in section["points"]:
        line = (
            f"| {point['venues']} × {point['symbols']} | {point['evaluations_per_update']} "
            f"| {point['us_per_update']:.1f} | {point['us_per_evaluation']:.2f} |"
        )
        if with_model:
            line += f" {point['model']['us_per_update']:.1f} | {point['model']['lstm_us_per_update']:.1f} |"
        lines.append(line)
    return lines


def _rss(result: Mapping[str, Any]) -> list[str]:
    section = result.get("rss")
    if not section:
        return []
    return [
        f"Signals role RSS, {section['venues']} venues × {section['symbols']} symbols, {section['levels']}-level "
        f"books, {section['rate_per_s']:,.0f} updates/s, {section['scorer']} scorer, {section['duration_s']:g} s "
        f"after a {section['warmup_s']:g} s warm-up: start {section['start_mb']:.0f} MB, end {section['end_mb']:.0f} "
        f"MB, peak {section['peak_mb']:.0f} MB, growth {section['growth_pct']:+.1f} % (CPU: signals role "
        f"{section['cpu_pct']['signals']:.0f} %, "
        f"{cpu_us_per_update(section['cpu_pct']['signals'], section['rate_per_s']):.0f} µs per update; venues "
        f"{section['cpu_pct']['venues']:.0f} %, other processes "
        f"{section['cpu_pct']['others']:.0f} % of a core). The engine applied "
        f"{section['engine_updates_per_s']:,.0f} updates/s (ccxt.pro hands a slow reader the latest book, not every "
        f"one); {section['role']['dropped']:,} signals or updates dropped, "
        f"{section['role'].get('books_dropped', 0):,} books dropped by a full republish queue.",
        "",
        _role_line("In the signals role", {section["scorer"]: section["role"]}),
    ]


def _machine_line(result: Mapping[str, Any]) -> str:
    machine = result["machine"]
    redis = f", Redis {machine['redis']}" if "redis" in machine else ""
    short = " Short run (smoke test sizes): not for comparison." if result.get("short") else ""
    return (
        f"Measured {result['measured_at']} on {machine['cpu']} ({machine['cores']} cores, "
        f"{machine.get('memory_gb') or '?'} GB), {machine.get('os', '')}, Python "
        f"{machine['python']}, ccxt {machine['ccxt']}, NumPy {machine['numpy']}{redis}; 1-minute load average "
        f"{machine['load_average_1m']} at start, {machine.get('load_average_1m_end', '?')} at the end.{short}"
    )
