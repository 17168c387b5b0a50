"""timing.json: how long this run's steps, checkpoints and evaluations take.

The worker sizes the grace period between its SIGTERM and its SIGKILL from it: a stop
waits at most for the micro-batch (or eval batch) in flight plus a checkpoint write.
Torch-free, so the worker can read it without loading torch.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import deque
from pathlib import Path

TIMING_FILE = "timing.json"
RECENT_STEPS = 20  # step_seconds is the median over this many recent steps
REFRESH_SECONDS = 10.0  # between checkpoints and evals, rewritten at most this often


def read_timing(out_dir: Path | str) -> dict[str, float]:
    """{"step_seconds", "checkpoint_seconds", "eval_seconds"}, those known so far; {} when
    the run has not written the file yet (or it cannot be read)."""
    try:
        timing = json.loads((Path(out_dir) / TIMING_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(timing, dict):
        return {}
    return {
        key: float(value)
        for key, value in timing.items()
        if isinstance(value, int | float) and math.isfinite(value)
    }


class TimingLog:
    """Collects the loop's durations and keeps `timing.json` in out_dir current."""

    def __init__(self, out_dir: Path, enabled: bool = True) -> None:
        self.path = Path(out_dir) / TIMING_FILE
        self.enabled = enabled  # only one DDP rank writes
        self.step_seconds: deque[float] = deque(maxlen=RECENT_STEPS)
        self.checkpoint_seconds: float | None = None
        self.eval_seconds: float | None = None
        self._written_at = -math.inf

    def step(self, seconds: float) -> None:
        self.step_seconds.append(seconds)
        if time.monotonic() - self._written_at >= REFRESH_SECONDS:
            self.write()

    def checkpoint(self, seconds: float) -> None:
        self.checkpoint_seconds = seconds
        self.write()

    def eval(self, seconds: float) -> None:
        self.eval_seconds = seconds
        self.write()

    def write(self) -> None:
        """Atomically (temp file + os.replace): a reader never sees half a file."""
        if not self.enabled:
            return
        timing = {
            "step_seconds": statistics.median(self.step_seconds) if self.step_seconds else None,
            "checkpoint_seconds": self.checkpoint_seconds,
            "eval_seconds": self.eval_seconds,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{TIMING_FILE}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({k: v for k, v in timing.items() if v is not None}))
        os.replace(tmp, self.path)
        self._written_at = time.monotonic()
