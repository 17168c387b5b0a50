"""One firing example per rule: a short series on which the rule (and maybe others) fires.

The invariance property (test_invariance.py) posts each of them to the engine in many
shapes and compares what it finds with the offline replay. `stalled` is judged on the
clock, not on data, and has its own tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.rules.base import SeriesView
from tests.rules.helpers import noisy_decay, series

EVERY = 10  # instrument_interval of the per-layer examples


@dataclass
class Example:
    code: str
    series: dict[str, SeriesView]
    config: dict[str, Any] = field(default_factory=dict)


def _layer(prefix: str, layer: str, stat: str, values: list[float]) -> dict[str, SeriesView]:
    return {f"{prefix}/{layer}/{stat}": series(values, every=EVERY)}


def _loss_at(every: int, n: int) -> SeriesView:
    return series(noisy_decay(n * every)[::every], every=every)


def examples() -> list[Example]:
    """Short series (tens of steps; windows shortened through config.rules where a
    rule's default window is longer), so the invariance property stays fast."""
    spiky = noisy_decay(60)
    spiky[40:44] = [5.0, 4.0, 3.0, 2.6]
    rng = np.random.default_rng(1)
    grad = 0.7 * rng.lognormal(0.0, 0.3, 60)
    grad[40] = 20.0
    nan_loss = list(noisy_decay(40))
    nan_loss[30:] = [math.nan] * 10
    init = noisy_decay(20)
    init[0] = 12.0
    diverged = noisy_decay(60)
    diverged[40:50] = 6.0
    clipped = [float(i % 10 < 7) for i in range(60)]
    flat = 4.0 * (1 + 0.01 * np.random.default_rng(0).standard_normal(50))
    val = [3.0, 2.8, 2.6, 2.5, 2.45, 2.5, 2.56, 2.62, 2.7, 2.78]
    leak = list(np.linspace(3.0, 2.0, 8))
    tokens = 1e5 * (1 + 0.05 * np.random.default_rng(0).standard_normal(70))
    tokens[35:58] *= 0.1
    mfu = 0.05 * (1 + 0.1 * np.random.default_rng(0).standard_normal(40))
    resumed = noisy_decay(60)
    resumed[30:] *= 1 + 0.5 * np.exp(-np.arange(30) / 10)
    return [
        Example("nonfinite", {"train/loss": series(nan_loss)}),
        Example("init_loss", {"train/loss": series(init), "data/vocab_size": series([96.0])}),
        Example("grad_norm_spike", {"train/grad_norm": series(grad)}),
        Example(  # the bad batch is at an eval step
            "loss_spike",
            {
                "train/loss": series(spiky),
                "val/loss": series(1.1 * noisy_decay(60)[::10], every=10),
            },
        ),
        Example("divergence", {"train/loss": series(diverged)}),
        Example(
            "clip_saturation",
            {
                "train/grad_clipped": series(clipped),
                "train/lr": series([1e-3] * 60),
                "train/loss": series(noisy_decay(60)),
            },
            {
                "warmup_steps": 5,
                "lr": 1e-3,
                "grad_clip": 1.0,
                "rules": {"clip_saturation": {"window": 20}},
            },  # fmt: skip
        ),
        Example(
            "plateau",
            {
                "train/loss": series(flat),
                "train/grad_norm": series(np.full(50, 0.8)),
                "train/lr": series(np.full(50, 2e-6)),
            },
            {"max_steps": 50, "rules": {"plateau": {"min_stretch": 12}}},
        ),
        Example(
            "overfit",
            {
                "val/loss": series(val, every=5),
                "train/loss_eval": series(list(np.linspace(3.0, 1.5, 10)), every=5),
                "train/loss": series(noisy_decay(50)),
            },
        ),
        Example(
            "train_val_leak",
            {
                "val/loss": series([t * 1.0005 for t in leak], every=5),
                "train/loss_eval": series(leak, every=5),
            },
        ),
        Example(
            "activation_saturation",
            _layer("act", "h1.mlp", "frac_saturated", [0.0] * 4 + [0.12] * 4)
            | _layer("act", "h0.mlp", "frac_saturated", [0.001] * 8),
        ),
        Example(
            "dead_units",
            _layer("act", "h1.mlp", "frac_dead", [0.0, 0.1, 0.3, 0.45, 0.52, 0.58, 0.6, 0.6])
            | _layer("act", "h0.mlp", "frac_dead", [0.02] * 8),
        ),
        Example(
            "activation_scale",
            _layer("act", "h0.resid", "std", [0.03, 300.0, 400.0] + [450.0] * 5),
        ),
        Example(
            "update_ratio",
            _layer("update", "h0", "ratio", [2e-5] * 12)
            | _layer("update", "h1", "ratio", [1e-3] * 12),
        ),
        Example(
            "lr_schedule",
            {"train/lr": series([1e-3] * 30), "train/loss": series(noisy_decay(30))},
            {
                "lr": 1e-3,
                "min_lr": 1e-4,
                "max_steps": 30,
                "schedule": "constant",
                "warmup_steps": 10,
            },  # fmt: skip
        ),
        Example(
            "resume_discontinuity",
            {"train/loss": series(resumed), "train/resumed": series([1.0], start=30)},
        ),
        Example(
            "throughput_drop",
            {"perf/tokens_per_sec": series(tokens)},
            {"rules": {"throughput_drop": {"window": 50, "min_points": 20}}},
        ),
        Example(
            "stability",
            {"train/loss": series(noisy_decay(20))},
            {"lr": 1e-2, "warmup_steps": 0, "grad_clip": 0},
        ),
        Example(
            "early_stop",
            {"train/loss": series(noisy_decay(30)), "train/early_stopped": series([2.1], start=29)},
        ),
        Example("mfu_measurement", {"perf/mfu": series([3.06] * 10)}),
        Example(
            "low_mfu",
            {"perf/mfu": series(mfu)},
            {"warmup_steps": 5, "device": "cuda", "rules": {"low_mfu": {"window": 10}}},
        ),
    ]


def rows_of(data: dict[str, SeriesView]) -> list[dict[str, Any]]:
    """The series as a script logs them: one row per step, all its keys."""
    by_step: dict[int, dict[str, Any]] = {}
    for key, view in data.items():
        for step, value in zip(view.steps.tolist(), view.values.tolist(), strict=True):
            by_step.setdefault(step, {})[key] = value if math.isfinite(value) else "NaN"
    return [{"step": step, "metrics": by_step[step]} for step in sorted(by_step)]
