"""System metrics of the logging process, logged under `sys/...`:

    sys/cpu_percent          the process's CPU use since the last sample (100 = one core)
    sys/rss_gb               its resident memory now (the trainer's `sys/mem_gb` is a
                             run's peak memory, a different thing under another name)
    sys/gpu{i}/util          per visible GPU, through NVML when `nvidia-ml-py` is
    sys/gpu{i}/mem_gb        installed and a driver answers; otherwise skipped silently
    sys/gpu{i}/power_w

Standard library only by default (/proc, os.times); psutil and pynvml are imported
lazily, only if present.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any

GB = 1e9  # as the trainer counts


class SystemMonitor:
    def __init__(self) -> None:
        self._last_wall = time.monotonic()
        self._last_cpu = self._cpu_seconds()
        self._nvml: Any = None
        self._gpus: list[Any] = []
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._gpus = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
        except Exception:  # no package, no driver, no GPU: nothing to report
            self._nvml = None
            self._gpus = []

    @staticmethod
    def _cpu_seconds() -> float:
        times = os.times()
        return times.user + times.system

    def sample(self) -> dict[str, float]:
        row: dict[str, float] = {}
        wall, cpu = time.monotonic(), self._cpu_seconds()
        if wall > self._last_wall:
            row["sys/cpu_percent"] = 100.0 * (cpu - self._last_cpu) / (wall - self._last_wall)
        self._last_wall, self._last_cpu = wall, cpu
        rss = resident_bytes()
        if rss is not None:
            row["sys/rss_gb"] = rss / GB
        for index, handle in enumerate(self._gpus):
            row.update(self._gpu(index, handle))
        return row

    def _gpu(self, index: int, handle: Any) -> dict[str, float]:
        nvml = self._nvml
        values: dict[str, float] = {}
        prefix = f"sys/gpu{index}"
        try:
            values[f"{prefix}/util"] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            values[f"{prefix}/mem_gb"] = nvml.nvmlDeviceGetMemoryInfo(handle).used / GB
            values[f"{prefix}/power_w"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except Exception:  # some boards do not report power; keep what they do report
            pass
        return values


def resident_bytes() -> int | None:
    """The process's current resident set size."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    if "psutil" in sys.modules or _importable("psutil"):
        import psutil

        return int(psutil.Process().memory_info().rss)
    # Peak, not current; KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _importable(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None
