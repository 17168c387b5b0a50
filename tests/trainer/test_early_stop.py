"""actions.early_stop on the `overfit` preset: stops after `patience` flat evaluations."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainer.conftest import run
from trainer.checkpoint import BEST, LATEST, load_checkpoint
from trainer.presets import preset_config

pytestmark = pytest.mark.slow  # an overfitting run to its turn: ~200 steps


def test_early_stop_ends_an_overfitting_run_and_keeps_the_best_checkpoint(
    tmp_path: Path, corpus: str
) -> None:
    patience = 3
    config = preset_config(
        "overfit",
        {
            "device": "cpu",
            "sample_interval": 10_000,
            "actions": {"early_stop": {"patience": patience}},
        },
    )
    out = tmp_path / "run"
    result, sink = run(config, corpus, out)
    assert result.status == "completed"
    assert result.step < config.max_steps and "early stop" in (result.reason or "")

    eval_steps, val = sink.series("val/loss")
    best_index = val.index(min(val))
    # Stopped at the evaluation `patience` evaluations after the best, not before.
    assert len(val) - 1 - best_index == patience
    (stop_step,), (marker,) = sink.series("train/early_stopped")
    assert stop_step == eval_steps[-1] == result.step
    assert marker == min(val)
    # Training really stopped there, and ckpt_best holds the weights that scored the best.
    assert max(sink.series("train/loss")[0]) == stop_step - 1  # the preset would go to 600
    best = load_checkpoint(out / BEST)
    assert best["step"] == eval_steps[best_index] and best["best_val_loss"] == min(val)
    assert load_checkpoint(out / LATEST)["step"] == stop_step
