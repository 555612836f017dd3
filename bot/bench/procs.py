"""Benchmark child processes: how the parent starts, waits for and stops them, and how a child answers.

A child runs `python -m bot.bench.workers KIND SPEC OUT`: it reads its JSON spec from SPEC, prints `ready` on
stdout once it is set up, runs until it is done or gets SIGTERM, and writes its JSON result to OUT. Its stderr goes
to a file next to OUT, quoted when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from bot import event_loop

READY = b"ready\n"
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Set to 1 for a child that must run on one core (they are read when NumPy loads)."""

WorkerMain = Callable[[dict[str, Any], Callable[[], None], asyncio.Event], Awaitable[dict[str, Any]]]
"""A child's body: (spec, say_ready, stop) → result. `stop` is set on SIGTERM."""

_numbers = itertools.count(1)


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process (Linux /proc), in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_s(pid: int | str = "self") -> float:
    """CPU time (user + system) a process has used so far (Linux /proc), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    """CPU time every process of the machine has used so far, summed over its cores (Linux /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used over a window, in % of one core: by each named process, and by the whole machine (`machine`)."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._start = time.monotonic()
        self._machine = _machine_busy_s()
        self._used = {name: cpu_s(pid) for name, pid in self._pids.items()}

    def read(self) -> dict[str, float]:
        """The shares since the meter was made; `others` is what the named processes do not explain."""
        elapsed = time.monotonic() - self._start
        shares = {name: (cpu_s(pid) - self._used[name]) / elapsed * 100.0 for name, pid in self._pids.items()}
        machine = (_machine_busy_s() - self._machine) / elapsed * 100.0
        shares["machine"] = machine
        shares["others"] = max(0.0, machine - sum(v for k, v in shares.items() if k != "machine"))
        return {name: round(value, 1) for name, value in shares.items()}


class WorkerFailed(RuntimeError):
    """A benchmark child exited badly, or did not get ready in time."""


class Worker:
    """One running benchmark child, seen from the parent."""

    def __init__(self, kind: str, process: asyncio.subprocess.Process, out: Path, errors: Path) -> None:
        self.kind = kind
        self.process = process
        self._out = out
        self._errors = errors

    @classmethod
    async def start(cls, kind: str, spec: Mapping[str, Any], workdir: Path, one_thread: bool = False) -> Worker:
        """Start a child of `kind` with `spec`; its files go to `workdir`."""
        number = next(_numbers)
        spec_path = workdir / f"{number:02d}-{kind}.spec.json"
        out = workdir / f"{number:02d}-{kind}.out.json"
        errors = workdir / f"{number:02d}-{kind}.stderr.txt"
        spec_path.write_bytes(orjson.dumps(dict(spec)))
        env = dict(os.environ)
        if one_thread:
            env.update(dict.fromkeys(THREAD_VARIABLES, "1"))
        with errors.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "bot.bench.workers", kind, str(spec_path), str(out)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        return cls(kind, process, out, errors)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ready(self, timeout_s: float) -> None:
        """Wait until the child says it is ready."""
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        except TimeoutError:
            await self._kill()
            raise WorkerFailed(f"{self.kind} worker not ready within {timeout_s:.0f} s{self._stderr_tail()}") from None
        if line != READY:
            await self.process.wait()
            raise WorkerFailed(f"{self.kind} worker exited before it was ready{self._stderr_tail()}")

    async def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Ask the child to stop (SIGTERM), wait for it, and return its result."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.result(timeout_s)

    async def result(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the child to end by itself, and return its result."""
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            await self._kill()
            raise WorkerFailed(
                f"{self.kind} worker did not end within {timeout_s:.0f} s{self._stderr_tail()}"
            ) from None
        if code != 0 or not self._out.exists():
            raise WorkerFailed(f"{self.kind} worker failed (exit code {code}){self._stderr_tail()}")
        result: dict[str, Any] = orjson.loads(self._out.read_bytes())
        return result

    async def _kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def close(self) -> None:
        """Kill the child if it still runs (after a failure elsewhere)."""
        await self._kill()

    def _stderr_tail(self, lines: int = 15) -> str:
        try:
            text = self._errors.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.strip().splitlines()[-lines:])
        return f":\n{tail}" if tail else ""


def serve(workers: Mapping[str, WorkerMain], argv: list[str]) -> int:
    """The child's side: run the worker named in `argv` (KIND SPEC OUT) and write its result."""
    if len(argv) != 3 or argv[0] not in workers:
        print(f"usage: python -m bot.bench.workers {{{','.join(workers)}}} SPEC OUT", file=sys.stderr)
        return 2
    kind, spec_path, out = argv
    spec: dict[str, Any] = orjson.loads(Path(spec_path).read_bytes())
    result = event_loop.run(_run(workers[kind], spec))
    Path(out).write_bytes(orjson.dumps(result))
    return 0


async def _run(main: WorkerMain, spec: dict[str, Any]) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def say_ready() -> None:
        sys.stdout.buffer.write(READY)
        sys.stdout.buffer.flush()

    try:
        return await main(spec, say_ready, stop)
    finally:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGTERM)
