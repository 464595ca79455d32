"""One line describing the machine a benchmark ran on, for the recorded results."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
    """Return the CPU model from /proc/cpuinfo (Linux), else what ``platform`` reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description(**versions: str) -> str:
    """Return CPU, logical CPU count, OS, Python and the given package versions, comma-separated."""
    parts = [
        cpu_name(),
        f"{os.cpu_count()} logical CPUs",
        f"{platform.system()} {platform.release()}",
        f"Python {platform.python_version()}",
    ]
    parts += [f"{name} {version}" for name, version in versions.items()]
    return ", ".join(parts)
