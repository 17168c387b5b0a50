"""Two CPU processes under torchrun (gloo): global loss and grad norm, rank 0 writes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import TINY, tiny_config
from trainer.data import Batches, make_splits
from trainer.model import build_model
from trainer.tokenizer import build_tokenizer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_process_ddp_logs_global_values_from_rank_zero(tmp_path: Path, corpus: str) -> None:
    text = corpus[:50_000]
    data = tmp_path / "data.txt"
    data.write_text(text)
    out = tmp_path / "run"
    settings = {**TINY, "dropout": 0.0, "max_steps": 4, "checkpoint_interval": 4}
    args = [f"--{key}={value}" for key, value in settings.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "trainer.cli", "--data", str(data), "--out", str(out), "--quiet", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2, 3]  # rank 0 only: no duplicates
    first = rows[0]["metrics"]
    state = torch.load(out / "ckpt_latest.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert state["config"]["nproc"] == 2  # taken from torchrun's WORLD_SIZE
    config = tiny_config(**{**settings, "nproc": 2})
    assert first["perf/tokens_per_sec"] == pytest.approx(
        config.tokens_per_step / (first["perf/step_ms"] / 1000), rel=1e-6
    )

    # Recompute step 0 by hand: same init on both ranks, each rank its own windows.
    tokenizer = build_tokenizer("char", text)
    splits = make_splits(config, text, tokenizer)
    losses, grads = [], []
    for rank in (0, 1):
        model = build_model(config, tokenizer.vocab_size)
        x, y = Batches(config, splits, torch.device("cpu"), rank).train_batch(0)
        loss = model(x, y)[1]
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad for p in model.parameters()])
    assert losses[0] != losses[1]  # the ranks really saw different data
    assert first["train/loss"] == pytest.approx(sum(losses) / 2, rel=1e-5)
    mean_grads = [(a + b) / 2 for a, b in zip(*grads, strict=True)]
    global_norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in mean_grads))
    assert first["train/grad_norm"] == pytest.approx(global_norm, rel=1e-4)
