"""A console progress line for `trainlens train`: step, loss, val, lr, tokens/s, ETA.

It is a sink wrapper, so the loop stays unaware of the console: it sees the same rows
the real sink gets. On a terminal it redraws one line; in a log file it prints a line
every ~5% of the run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TextIO

from trainer.sink import MetricSink


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressSink:
    """Forwards everything to `inner` and draws progress from the logged rows."""

    def __init__(self, inner: MetricSink, max_steps: int, stream: TextIO | None = None) -> None:
        self.inner = inner
        self.max_steps = max_steps
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.print_every = max(1, max_steps // 20)
        self.values: dict[str, float] = {}
        self._first: tuple[int, float] | None = None
        self._tokens_per_sec: float | None = None

    def log(self, step: int, metrics: Mapping[str, float], wall_time: float | None = None) -> None:
        self.inner.log(step, metrics, wall_time)
        for key in ("train/loss", "val/loss", "train/lr"):
            if key in metrics:
                self.values[key] = metrics[key]
        rate = metrics.get("perf/tokens_per_sec")
        if rate is not None:  # smoothed: single steps are noisy
            previous = self._tokens_per_sec
            self._tokens_per_sec = rate if previous is None else 0.9 * previous + 0.1 * rate
        now = time.monotonic()
        if self._first is None:
            self._first = (step, now)
        last = step == self.max_steps - 1
        if self.interactive or last or step % self.print_every == 0 or "val/loss" in metrics:
            self._draw(step, now, final=last)

    def _draw(self, step: int, now: float, final: bool) -> None:
        assert self._first is not None
        first_step, first_time = self._first
        done = step - first_step + 1
        # ETA from wall time, so evals and samples are part of the estimate.
        eta = (now - first_time) / done * (self.max_steps - step - 1) if done > 1 else None
        parts = [f"step {step + 1}/{self.max_steps}"]
        if "train/loss" in self.values:
            parts.append(f"loss {self.values['train/loss']:.4f}")
        if "val/loss" in self.values:
            parts.append(f"val {self.values['val/loss']:.4f}")
        if "train/lr" in self.values:
            parts.append(f"lr {self.values['train/lr']:.2e}")
        if self._tokens_per_sec is not None:
            parts.append(f"{self._tokens_per_sec:,.0f} tok/s")
        parts.append(f"ETA {format_duration(eta) if eta is not None else '?'}")
        line = " | ".join(parts)
        if self.interactive:
            self.stream.write("\r" + line.ljust(100) + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def sample(self, step: int, text: str) -> None:
        self.inner.sample(step, text)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
        self.inner.close()
