"""Every rule on hostile input: external runs log whatever they like."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from app.rules.base import SeriesView
from app.rules.registry import RULES
from app.rules.replay import replay

KEYS = [
    "train/loss", "val/loss", "train/loss_eval", "train/grad_norm", "train/grad_clipped",
    "train/lr", "train/resumed", "perf/tokens_per_sec", "perf/mfu", "data/vocab_size",
    "act/h0.mlp/std", "act/h0.mlp/frac_saturated", "act/h0.mlp/frac_dead",
    "act/h0.resid/std", "act/h1.resid/std", "update/h0/ratio", "train/lr/group0",
    "train/lr/group1",
]  # fmt: skip


def hostile(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "nan":
        return np.full(n, math.nan)
    if kind == "mixed":
        values = rng.standard_normal(n) * 10
        values[rng.random(n) < 0.2] = math.nan
        values[rng.random(n) < 0.05] = math.inf
        values[rng.random(n) < 0.05] = -math.inf
        return values
    if kind == "zeros":
        return np.zeros(n)
    if kind == "negative":
        return -rng.random(n) * 1e6
    return np.full(n, 1e308)  # "huge"


# numpy warns when a median of 1e308s overflows; the rules must still not raise.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", ["nan", "mixed", "zeros", "negative", "huge"])
@pytest.mark.parametrize("length", [1, 3, 400])
def test_no_rule_raises(kind: str, length: int, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(length)
    steps = np.sort(rng.choice(10 * length, size=length, replace=False))
    series = {
        key: SeriesView(steps, hostile(kind, length, rng), steps.astype(float) * 0.1)
        for key in KEYS
    }
    config = {"vocab_size": 0, "lr": 0, "warmup_steps": -5, "max_steps": 1, "schedule": "cosine",
              "grad_clip": -1.0, "min_lr": math.nan, "rules": "not a dict"}  # fmt: skip
    with caplog.at_level(logging.ERROR):
        replay(RULES, series, config, every=7, now=1e12)
        replay(RULES, series, {}, every=1000)
    assert "failed" not in caplog.text, caplog.text
