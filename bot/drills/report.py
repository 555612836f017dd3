"""What a drill did and counted, the invariants it checked, and how it prints and saves that."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

Say = Callable[[str], None]
"""Where a drill's progress lines go (the terminal, or nowhere)."""


@dataclass(frozen=True, slots=True)
class Check:
    """One invariant: its name, whether it held, and the numbers that say so."""

    name: str
    ok: bool
    detail: str


@dataclass(slots=True)
class DrillReport:
    """A drill run: the steps it took (with their times), its counts and its checks.

    `counts` holds plain JSON values (numbers, strings, nested dicts); the checks decide the exit code.
    """

    drill: str
    form: str
    say: Say = print
    steps: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0

    def step(self, text: str) -> None:
        """Record (and print) one thing the drill did, stamped with the seconds since it started."""
        line = f"[{time.monotonic() - self.started:6.1f}s] {text}"
        self.steps.append(line)
        self.say(line)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        """Record one invariant; returns `ok`."""
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def finish(self) -> None:
        """Stop the clock."""
        self.duration_s = time.monotonic() - self.started

    @property
    def ok(self) -> bool:
        """Every check held (and there was at least one)."""
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        """The checks that did not hold."""
        return [check for check in self.checks if not check.ok]

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON values (what `--json` writes)."""
        return {
            "drill": self.drill,
            "form": self.form,
            "ok": self.ok,
            "duration_s": round(self.duration_s, 2),
            "counts": self.counts,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "failed": [c.name for c in self.failed],
            "steps": self.steps,
        }

    def write(self, path: Path) -> None:
        """Write the JSON report to `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2) + b"\n")

    def summary_lines(self) -> list[str]:
        """The counts and the checks as the terminal shows them at the end."""
        lines = [f"drill {self.drill} ({self.form}) in {self.duration_s:.1f} s", "counts:"]
        lines.extend(f"  {key}: {_compact(value)}" for key, value in self.counts.items())
        lines.append("checks:")
        lines.extend(f"  [{'ok' if c.ok else 'FAILED'}] {c.name}: {c.detail}" for c in self.checks)
        if self.ok:
            lines.append(f"PASS: every invariant of {self.drill} held")
        elif not self.checks:
            lines.append(f"FAIL: {self.drill} checked nothing")
        else:
            lines.append(f"FAIL: {', '.join(c.name for c in self.failed)}")
        return lines


def _compact(value: Any) -> str:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)
