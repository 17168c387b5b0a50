"""low_mfu: model FLOPs utilisation stays low after warm-up."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, Thresholds
from app.rules.stats import trailing_baseline

KEY = "perf/mfu"


class LowMfuThresholds(Thresholds):
    # fire when the median MFU of the recent window is below this fraction of peak
    threshold: float = Field(default=0.15, gt=0, le=1)
    # points (ending at the judged one) whose median is the "sustained" MFU
    window: int = Field(default=50, ge=1)
    # where warmup_steps is not in the config, skip this many steps (compilation,
    # allocator and cache warm-up make the first steps slow in every run)
    default_warmup: int = Field(default=50, ge=0)


class LowMfu(Rule):
    """The model FLOPs utilisation (the fraction of the device's peak arithmetic rate
    that the model's own matmuls achieve) has stayed low after warm-up. Well-tuned GPU
    training of a transformer reaches 30-60%; below 15% the device mostly waits: on
    the input pipeline, on host-device syncs, on kernel launches of a model too small
    for the device, or on unfused memory-bound operations. On a CPU the peak is a
    measured matmul rate and small models rarely reach it; there this is a hint, not a
    fault."""

    code = "low_mfu"
    title = "Low model FLOPs utilisation"
    severity = "info"
    fix = (
        "Raise the work per step (larger batch_size or block_size, gradient accumulation), "
        "use bf16 autocast and torch.compile (compile=true), remove per-step host syncs "
        "(.item(), printing), and check the data loader (see throughput_drop)."
    )
    thresholds = LowMfuThresholds
    keep_firing_for = 5

    def check(self, view: RunView, limits: LowMfuThresholds) -> list[Observation]:
        series = view.series(KEY)
        warmup = view.config_number("warmup_steps")
        skip = warmup if warmup is not None else limits.default_warmup
        # Judged once a full window of post-warmup points ends at the point.
        first_post = series.index_of(int(np.ceil(skip)))
        start = max(view.first_new(KEY), first_post + limits.window - 1)
        if start >= len(series):
            return []
        offset = start - limits.window + 1
        # A trailing baseline of the series with a NaN appended: the window before
        # index i + 1 is the window ending at point i, which is the one wanted here.
        # Values above 100% are no MFU (mfu_measurement's finding): left out.
        values = series.values[offset:]
        values = np.r_[np.where(values > 1.0, np.nan, values), np.nan]
        median = trailing_baseline(values, limits.window, limits.window).median
        device = view.config.get("device")
        device = device if isinstance(device, str) and device != "auto" else None
        observations = []
        for i, level in enumerate(median.tolist()):
            step = int(series.steps[start + i])
            if not level < limits.threshold:
                observations.append(Observation(step, False))
                continue
            on = f" on {device}" if device else ""
            observations.append(
                Observation(
                    step,
                    True,
                    evidence={
                        "mfu_median": level,
                        "mfu": float(series.values[start + i]),
                        "window": limits.window,
                        "threshold": limits.threshold,
                        "device": device,
                    },
                    detail=(
                        f"{KEY} had a median of {100 * level:.1f}% over the {limits.window} "
                        f"steps to step {step}{on}, under {100 * limits.threshold:.0f}%."
                    ),
                )
            )
        return observations
