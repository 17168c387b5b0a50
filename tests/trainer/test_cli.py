"""`trainlens train` end to end, as a user runs it: a subprocess and files on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.trainer.conftest import TINY
from trainer.checkpoint import read_checkpoint_info
from trainer.cli import build_config, build_parser

REPO = Path(__file__).resolve().parents[2]
STEP_KEYS = {
    "train/loss", "train/grad_norm", "train/grad_clipped", "train/lr",
    "perf/tokens_per_sec", "perf/step_ms", "sys/mem_gb",
}  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _strict_json_lines(path: Path) -> list[dict]:
    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    return [json.loads(line, parse_constant=reject) for line in path.read_text().splitlines()]


def _cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer.cli", *args], cwd=REPO, env=ENV,
        capture_output=True, text=True, timeout=120, **kwargs,
    )  # fmt: skip


def test_cli_trains_and_writes_metrics_samples_and_checkpoints(tmp_path: Path, corpus: str) -> None:
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({**TINY, "max_steps": 50}))
    data = tmp_path / "data.txt"
    data.write_text(corpus[:50_000])
    out = tmp_path / "run"
    proc = _cli(
        "--config", str(config), "--data", str(data), "--out", str(out),
        "--max_steps", "6", "--sample-interval", "3", "--eval_interval", "5",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "completed at step 6" in proc.stderr
    assert "step 6/6" in proc.stderr and "tok/s" in proc.stderr and "ETA" in proc.stderr

    rows = _strict_json_lines(out / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(6))
    for row in rows:
        assert STEP_KEYS <= set(row["metrics"])
        assert isinstance(row["time"], float)
    assert {"val/loss", "train/loss_eval"} <= set(rows[0]["metrics"])
    assert {"val/loss", "train/loss_eval"} <= set(rows[5]["metrics"])
    assert "act/h1.resid/std" in rows[5]["metrics"]  # instrument_interval 5 from the file
    samples = _strict_json_lines(out / "samples.jsonl")
    assert [s["step"] for s in samples] == [3] and samples[0]["text"]
    info = read_checkpoint_info(out / "ckpt_latest.pt")
    assert info.step == 6 and info.config["max_steps"] == 6 and info.config["n_embd"] == 32
    assert (out / "ckpt_best.pt").exists()

    again = _cli("--config", str(config), "--data", str(data), "--out", str(out),
                 "--max_steps", "8", "--resume", "--quiet")  # fmt: skip
    assert again.returncode == 0, again.stderr
    rows = _strict_json_lines(out / "metrics.jsonl")
    assert [row["step"] for row in rows] == [*range(6), 6, 7]
    assert rows[6]["metrics"]["train/resumed"] == 1.0


def test_cli_reports_invalid_settings_by_field(tmp_path: Path) -> None:
    proc = _cli("--out", str(tmp_path), "--n_embd", "100", "--n_head", "3")
    assert proc.returncode == 2
    assert "n_embd (100) must be divisible by n_head (3)" in proc.stderr
    proc = _cli("--out", str(tmp_path), "--n_layer", "many")
    assert proc.returncode == 2
    assert "  n_layer: Input should be a valid integer" in proc.stderr.splitlines()[1]
    assert not list(tmp_path.iterdir())


def test_flags_layer_over_preset_and_file(tmp_path: Path) -> None:
    config_file = tmp_path / "cfg.json"
    config_file.write_text(json.dumps({"lr": 0.02, "faults": {"spike_step": 10}}))
    args = build_parser().parse_args([
        "--out", str(tmp_path), "--preset", "nan", "--config", str(config_file),
        "--min_lr", "1e-4", "--faults.nan_step", "30", "--compile", "--device", "cpu",
        "--rules", '{"loss_spike": {"zscore": 8}}', "--actions.webhook_url", "none",
    ])  # fmt: skip
    config = build_config(args)
    assert config.lr == 0.02 and config.min_lr == 1e-4  # file, then flag
    assert config.faults.nan_step == 30 and config.faults.spike_step == 10
    assert config.n_layer == 2  # from the preset
    assert config.compile is True and config.device == "cpu"
    assert config.rules == {"loss_spike": {"zscore": 8}}
    assert config.actions.webhook_url is None


@pytest.mark.slow
def test_sigterm_finishes_the_step_checkpoints_and_exits_cleanly(
    tmp_path: Path, corpus: str
) -> None:
    data = tmp_path / "data.txt"
    data.write_text(corpus[:50_000])
    out = tmp_path / "run"
    settings = {**TINY, "max_steps": 100_000, "checkpoint_interval": 100_000}
    args = [f"--{key}={value}" for key, value in settings.items()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer.cli", "--data", str(data), "--out", str(out), *args],
        cwd=REPO, env=ENV, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 90
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)  # polling for a condition, not waiting out a race
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped (SIGTERM)" in stderr
    steps = [row["step"] for row in _strict_json_lines(metrics)]
    assert steps == list(range(len(steps)))
    assert read_checkpoint_info(out / "ckpt_latest.pt").step == len(steps)
