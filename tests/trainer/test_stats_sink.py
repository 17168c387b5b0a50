"""robust_zscore and the JSONL sink."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trainer.sink import JsonlSink, MemorySink, MetricSink
from trainer.stats import is_loss_spike, robust_zscore


def test_robust_zscore_matches_median_and_scaled_mad() -> None:
    history = [1.0, 2.0, 3.0, 4.0, 100.0]  # median 3, MAD 1 -> scale 1.4826
    assert robust_zscore(history, 3.0) == 0.0
    assert robust_zscore(history, 6.0) == pytest.approx(3.0 / 1.4826)
    assert robust_zscore(history, 0.0) == pytest.approx(-3.0 / 1.4826)


def test_robust_zscore_edge_cases() -> None:
    assert math.isnan(robust_zscore([], 1.0))
    assert math.isnan(robust_zscore([1.0, 2.0], float("nan")))
    assert robust_zscore([2.0, 2.0, 2.0], 2.0) == 0.0
    assert robust_zscore([2.0, 2.0, 2.0], 2.5) == math.inf
    assert robust_zscore([2.0, float("nan"), 2.0, float("inf")], 1.0) == -math.inf
    assert robust_zscore([1.0, 2.0, 3.0], math.inf) == math.inf


def test_jsonl_sink_writes_strict_json_with_nonfinite_strings(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "run")
    assert isinstance(sink, MetricSink)
    assert not (tmp_path / "run").exists()  # nothing written yet, nothing created
    sink.log(0, {"train/loss": 4.2, "a": float("nan"), "b": float("inf"), "c": -math.inf}, 12.5)
    sink.log(1, {"train/loss": 3.9})
    sink.sample(1, "def f():\n")
    sink.close()

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=reject) for line in lines]
    assert rows[0] == {
        "step": 0,
        "metrics": {"train/loss": 4.2, "a": "NaN", "b": "Infinity", "c": "-Infinity"},
        "time": 12.5,
    }
    assert rows[1]["step"] == 1 and rows[1]["time"] > 0
    sample = json.loads((tmp_path / "run" / "samples.jsonl").read_text())
    assert sample["step"] == 1 and sample["text"] == "def f():\n"


def test_memory_sink_series() -> None:
    sink = MemorySink()
    sink.log(0, {"x": 1.0})
    sink.log(1, {"y": 2.0})
    sink.log(2, {"x": 3.0})
    assert sink.series("x") == ([0, 2], [1.0, 3.0])


def test_is_loss_spike_waits_for_history_and_flags_nonfinite() -> None:
    calm = [2.0 + 0.01 * (i % 5) for i in range(64)]
    assert not is_loss_spike(calm[:10], 50.0, 6.0)  # too little history to judge
    assert is_loss_spike(calm[:10], float("nan"), 6.0)  # non-finite is always a spike
    assert is_loss_spike(calm, 3.0, 6.0)
    assert not is_loss_spike(calm, 2.03, 6.0)
    assert not is_loss_spike(calm, 1.0, 6.0)  # only spikes upward count
