"""timing.json: the durations the worker sizes its stop grace period from."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from tests.trainer.conftest import run, tiny_config
from trainer.timing import RECENT_STEPS, TIMING_FILE, TimingLog, read_timing


def test_a_run_leaves_its_step_checkpoint_and_eval_times(tmp_path: Path, corpus: str) -> None:
    config = tiny_config(max_steps=RECENT_STEPS + 5, checkpoint_interval=10, eval_interval=10)
    _, sink = run(config, corpus, tmp_path)
    timing = read_timing(tmp_path)
    _, step_ms = sink.series("perf/step_ms")
    # The final checkpoint rewrote it after the last step.
    assert timing["step_seconds"] == pytest.approx(
        statistics.median(step_ms[-RECENT_STEPS:]) / 1000
    )
    assert timing["checkpoint_seconds"] > 0 and timing["eval_seconds"] > 0
    assert [p.name for p in tmp_path.glob(f"*{TIMING_FILE}*")] == [TIMING_FILE]  # no temp file


def test_steps_rewrite_it_at_most_every_refresh_period(tmp_path: Path) -> None:
    timing = TimingLog(tmp_path)
    timing.step(1.0)  # the first step writes at once
    timing.step(3.0)  # within the refresh period: not yet
    assert read_timing(tmp_path) == {"step_seconds": 1.0}
    timing.eval(0.5)  # an eval (or a checkpoint) always rewrites
    assert read_timing(tmp_path) == {"step_seconds": 2.0, "eval_seconds": 0.5}


def test_reading_before_the_run_wrote_it(tmp_path: Path) -> None:
    assert read_timing(tmp_path / "missing") == {}
    (tmp_path / TIMING_FILE).write_text("[1, 2")
    assert read_timing(tmp_path) == {}
