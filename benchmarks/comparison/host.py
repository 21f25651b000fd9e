"""The machine a benchmark runs on, and this process's resident memory (standard library only)."""

from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path


def machine() -> str:
    """CPU model, core count and Python version, as the results pages state them."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def resident_kib(field: str) -> int | None:
    """A field of /proc/self/status in KiB (VmRSS: resident set now; VmHWM: its high-water mark), None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_resident_mb() -> float:
    """This process's resident-set high-water mark in MB: VmHWM on Linux (the memory of this process alone), else
    `ru_maxrss`, which on Linux would also count the parent's resident set at the fork that started this process (the
    kernel carries it across exec), and is KiB on Linux but bytes on macOS."""
    peak = resident_kib("VmHWM")
    if peak is not None:
        return peak / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
