"""The LR range test: an exponential sweep that ends at divergence and suggests an LR."""

from __future__ import annotations

import math
from pathlib import Path

from tests.trainer.conftest import run
from trainer.config import LRFinderConfig
from trainer.presets import PRESETS, preset_config
from trainer.schedule import LRRangeTest, sweep_lr


def test_the_sweep_is_exponential_from_start_to_end() -> None:
    finder = LRFinderConfig(start_lr=1e-6, end_lr=1.0)
    lrs = [sweep_lr(finder, step, 301) for step in range(301)]
    assert math.isclose(lrs[0], 1e-6) and math.isclose(lrs[-1], 1.0)
    assert math.isclose(lrs[150], 1e-3)  # halfway in log space
    ratios = {round(b / a, 9) for a, b in zip(lrs, lrs[1:], strict=False)}
    assert len(ratios) == 1  # a constant factor per step


def test_divergence_is_judged_on_the_smoothed_loss() -> None:
    test = LRRangeTest(LRFinderConfig(smoothing=0.5, divergence=4.0))
    losses = [5.0] * 10 + [4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 9.0, 30.0]
    lrs = [10.0 ** (i - 10) for i in range(len(losses))]
    verdicts = [test.observe(lr, loss) for lr, loss in zip(lrs, losses, strict=True)]
    assert verdicts.index(True) == len(losses) - 1  # 30 pushes the EMA past 4x its minimum
    assert test.best_lr == lrs[14] and test.suggestion() == lrs[14] / 10
    assert LRRangeTest(LRFinderConfig()).observe(1e-3, math.nan) is True


def test_lr_finder_suggests_an_lr_between_too_low_and_too_high(tmp_path: Path, corpus: str) -> None:
    config = preset_config("lr_finder", {"device": "cpu"})
    result, sink = run(config, corpus, tmp_path / "run")
    assert result.status == "completed"
    steps, lrs = sink.series("train/lr")
    assert all(b > a for a, b in zip(lrs, lrs[1:], strict=False))
    # It diverged before the end of the sweep and said so.
    assert result.step < config.max_steps and "diverged" in (result.reason or "")
    (suggested,) = sink.series("lr_finder/suggested_lr")[1]
    low = PRESETS["lr_too_low"].overrides["lr"]
    high = PRESETS["lr_too_high"].overrides["lr"]
    assert low < suggested < high, suggested
    assert f"{suggested:.3g}" in (result.reason or "")
    print(f"lr_finder suggested lr {suggested:.3g} (stopped at step {result.step})")
