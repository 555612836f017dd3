"""Roles as real processes (`python -m bot …`) that a drill starts, kills with SIGKILL, and stops with SIGTERM.

Each process writes stdout and stderr to its own log file (a pipe nobody reads would fill and block it); a role
is ready once its log shows the line it prints when it has started.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from pathlib import Path

from bot.drills.setup import python


@dataclass(slots=True)
class RoleProcess:
    """One role (`signals`, `risk`, `paper`): its command, the line that says it is ready, and its history."""

    name: str
    args: tuple[str, ...]
    ready_line: str
    env: dict[str, str]
    logs: Path
    starts: int = 0
    kills: int = 0
    unexpected_exits: list[int] = field(default_factory=list)
    """Exit codes of runs that ended although the drill had not killed or stopped them (crashes)."""
    _process: asyncio.subprocess.Process | None = None
    _log: Path | None = None

    @property
    def running(self) -> bool:
        """The role's process is alive."""
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        """The current process id, None when not running."""
        return self._process.pid if self._process is not None else None

    async def start(self, timeout_s: float = 60.0) -> bool:
        """Start the role and wait for its ready line; False (it is killed) if it does not come in time."""
        self.starts += 1
        self._log = self.logs / f"{self.name}-{self.starts}.log"
        with self._log.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                python(), "-m", "bot", *self.args, env=self.env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.ready_line not in self.log_text():
            if self._process.returncode is not None:
                self.unexpected_exits.append(self._process.returncode)
                return False
            if loop.time() > deadline:
                await self._reap(signal.SIGKILL)
                return False
            await asyncio.sleep(0.1)
        return True

    def log_text(self) -> str:
        """What the current run has written so far."""
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_text(encoding="utf-8", errors="replace")

    def check_alive(self) -> bool:
        """True while running; a run found ended on its own is recorded as an unexpected exit (once)."""
        process = self._process
        if process is None:
            return False
        if process.returncode is None:
            return True
        self.unexpected_exits.append(process.returncode)
        self._process = None
        return False

    async def kill(self) -> None:
        """SIGKILL the running role and reap it (a role found already ended is recorded as an unexpected exit)."""
        if self.check_alive():
            await self._reap(signal.SIGKILL)
            self.kills += 1

    def pause(self) -> None:
        """SIGSTOP the running role (it keeps its connections but does nothing until `resume`)."""
        if self.check_alive():
            assert self._process is not None
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused role."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGCONT)

    async def _reap(self, sig: signal.Signals) -> None:
        if self._process is not None:
            self._process.send_signal(sig)
            await self._process.wait()
            self._process = None

    def errors_logged(self) -> list[str]:
        """ERROR and CRITICAL records in the logs of every run (the roles log as `time LEVEL logger: message`)."""
        found: list[str] = []
        for number in range(1, self.starts + 1):
            text = (self.logs / f"{self.name}-{number}.log").read_text(encoding="utf-8", errors="replace")
            found.extend(line for line in text.splitlines() if " ERROR " in line or " CRITICAL " in line)
        return found

    async def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the role and wait for it (SIGKILL after `timeout_s`); its exit code, None if it was not running."""
        process = self._process
        if process is None:
            return None
        if process.returncode is not None:
            self.unexpected_exits.append(process.returncode)
            self._process = None
            return process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            process.kill()
            code = await process.wait()
        self._process = None
        return code
