"""Checkpoints: atomic under a kill, weights_only loads, stop/resume bitwise exact."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from tests.trainer.conftest import run, tiny_config
from trainer.checkpoint import (
    BEST,
    LATEST,
    capture_rng_state,
    load_checkpoint,
    read_checkpoint_info,
    restore_rng_state,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]


class StopAfter:
    """A TrainControl that asks to stop on its n-th poll."""

    def __init__(self, polls: int) -> None:
        self.polls = polls
        self.calls = 0

    def should_stop(self) -> bool:
        self.calls += 1
        return self.calls >= self.polls


def test_a_kill_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    path = tmp_path / LATEST
    script = textwrap.dedent(
        """
        import os, sys, torch
        from pathlib import Path
        from trainer.checkpoint import save_checkpoint
        path = Path(sys.argv[1])
        save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)

        def dying_save(obj, handle, *args, **kwargs):
            handle.write(b"PK\\x03\\x04" + b"\\0" * 4096)  # half a checkpoint on disk
            handle.flush()
            os._exit(9)  # the process dies mid-write

        torch.save = dying_save
        save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, timeout=60)
    assert proc.returncode == 9
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(1000))
    assert list(tmp_path.glob(".*tmp*")), "the dead writer's temp file should remain"
    save_checkpoint({"step": 3, "w": torch.zeros(3)}, path)
    assert load_checkpoint(path)["step"] == 3
    assert not list(tmp_path.glob(".*tmp*")), "stale temp files are cleaned up"


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]


def test_stop_writes_a_checkpoint_and_resume_is_bitwise_exact(tmp_path: Path, corpus: str) -> None:
    # Dropout on: resuming must restore the RNG streams, not just the weights.
    config = tiny_config(max_steps=20, dropout=0.1, eval_interval=5, checkpoint_interval=7)
    straight, straight_sink = run(config, corpus, tmp_path / "straight")
    assert straight.status == "completed" and straight.step == 20

    first, first_sink = run(config, corpus, tmp_path / "split", control=StopAfter(10))
    assert first.status == "stopped" and first.step == 10
    assert first.checkpoint == tmp_path / "split" / LATEST
    info = read_checkpoint_info(tmp_path / "split" / LATEST)
    assert info.step == 10 and info.config == config.model_dump(mode="json")
    assert info.seed == config.seed

    second, second_sink = run(config, corpus, tmp_path / "split", resume=True)
    assert second.status == "completed" and second.step == 20
    resumed_steps = [s for s, row in second_sink.rows if "train/resumed" in row]
    assert resumed_steps == [10]

    for key in ("train/loss", "train/grad_norm", "val/loss"):
        steps, values = straight_sink.series(key)
        split_steps = first_sink.series(key)[0] + second_sink.series(key)[0]
        split_values = first_sink.series(key)[1] + second_sink.series(key)[1]
        assert split_steps == steps
        assert split_values == values, key  # bitwise, not approximately


def test_checkpoint_contents_load_weights_only(tmp_path: Path, corpus: str) -> None:
    config = tiny_config(max_steps=10, precision="fp16")  # fp16 on CPU: a GradScaler exists
    run(config, corpus, tmp_path)
    state = torch.load(tmp_path / LATEST, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "scaler", "step", "best_val_loss", "config", "tokenizer",
            "rng", "world_size"} <= set(state)  # fmt: skip
    assert state["scaler"]["scale"] > 0
    assert state["tokenizer"]["kind"] == "char" and len(state["tokenizer"]["chars"]) > 50
    assert {"torch", "python", "numpy", "data"} <= set(state["rng"][0])
    best = torch.load(tmp_path / BEST, map_location="cpu", weights_only=True)
    assert best["step"] in (5, 9) and math.isfinite(best["best_val_loss"])
