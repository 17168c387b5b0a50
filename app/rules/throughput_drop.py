"""throughput_drop: tokens/s falls well below its recent level and stays there."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, Thresholds
from app.rules.stats import robust_z, trailing_baseline

KEY = "perf/tokens_per_sec"


class ThroughputDropThresholds(Thresholds):
    # points before each judged one that set its baseline (median and robust sigma)
    window: int = Field(default=200, ge=2)
    # the baseline needs at least this many finite points
    min_points: int = Field(default=30, ge=2)
    # robust sigmas below the baseline median ...
    zscore: float = Field(default=3.0, gt=0)
    # ... and below this fraction of it: tokens/s on a shared machine is noisy (another
    # process can take a core for a few seconds), so a step at 60% of normal is no stall
    max_ratio: float = Field(default=0.5, gt=0, le=1)
    # sigma floor, as a fraction of the median (a perfectly steady rate)
    sigma_floor: float = Field(default=0.01, ge=0)


class ThroughputDrop(Rule):
    """Training throughput (tokens per second) has dropped far below its recent level
    and stayed there. The model and batch did not change, so the steps are waiting on
    something else: most often the data loader cannot keep up (too few workers, slow
    storage, heavy on-the-fly tokenisation), or another process is sharing the device.
    Every slow step is paid-for hardware standing idle."""

    code = "throughput_drop"
    title = "Throughput drop (data loader falling behind?)"
    severity = "warning"
    fix = (
        "Check the input pipeline: more DataLoader workers, pin_memory, prefetching, "
        "pre-tokenised data on fast local storage. Check for other processes on the device "
        "(nvidia-smi, top) and for host-side work added to the loop (logging, syncs)."
    )
    thresholds = ThroughputDropThresholds
    # A sustained stretch, not a few slow steps: a checkpoint write, a GC pause or another
    # process briefly sharing the CPU slows 5-15 steps in a row on a small CPU run.
    pending_for = 20
    keep_firing_for = 5

    def check(self, view: RunView, limits: ThroughputDropThresholds) -> list[Observation]:
        series = view.series(KEY)
        start = view.first_new(KEY)
        if start >= len(series):
            return []
        # The baseline needs only the window before the first new point.
        offset = max(0, start - limits.window)
        values = series.values[offset:]
        baseline = trailing_baseline(values, start - offset, limits.window)
        new_values = values[start - offset :]
        z = robust_z(new_values, baseline, limits.sigma_floor * np.abs(baseline.median))
        with np.errstate(invalid="ignore"):
            ratio = new_values / baseline.median
        enough = baseline.count >= limits.min_points
        low = enough & (z < -limits.zscore) & (ratio < limits.max_ratio)
        observations = []
        for i in range(len(new_values)):
            step = int(series.steps[start + i])
            if not enough[i] or not np.isfinite(new_values[i]):
                continue  # nothing to compare with yet
            if not low[i]:
                observations.append(Observation(step, False))
                continue
            median = float(baseline.median[i])
            observations.append(
                Observation(
                    step,
                    True,
                    evidence={
                        "tokens_per_sec": float(new_values[i]),
                        "baseline_median": median,
                        "ratio": float(ratio[i]),
                        "robust_z": float(z[i]),
                        "window": int(baseline.count[i]),
                        "zscore_threshold": limits.zscore,
                        "max_ratio": limits.max_ratio,
                    },
                    detail=(
                        f"{KEY} fell to {new_values[i]:.4g} at step {step}, "
                        f"{100 * ratio[i]:.0f}% of the previous {int(baseline.count[i])} "
                        f"steps' median ({median:.4g}), {-z[i]:.1f} robust sigma below it."
                    ),
                )
            )
        return observations
