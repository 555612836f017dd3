"""What a benchmark ran on, for its JSON: shared by every benchmark."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any


def cpu_model() -> str:
    """Return the CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gb() -> float | None:
    """Return the machine's total memory in GB (from /proc/meminfo), or None where there is none."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def describe() -> dict[str, Any]:
    """Return the machine and versions a benchmark ran on, with the 1-minute load average now (other work)."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "ccxt": importlib.metadata.version("ccxt"),
        "numpy": importlib.metadata.version("numpy"),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
