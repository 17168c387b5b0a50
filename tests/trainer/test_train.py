"""The loop's instruments: what is logged, how it is computed, and what it costs."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer.conftest import run, tiny_config
from trainer import mfu
from trainer import train as train_module
from trainer.data import Batches, make_splits
from trainer.model import build_model
from trainer.steps import StepValues
from trainer.tokenizer import build_tokenizer

STEP_KEYS = {
    "train/loss", "train/grad_norm", "train/grad_clipped", "train/lr",
    "perf/tokens_per_sec", "perf/step_ms", "sys/mem_gb",
}  # fmt: skip


def test_logged_pre_clip_norm_equals_a_hand_computed_norm(tmp_path: Path, corpus: str) -> None:
    config = tiny_config(max_steps=1, warmup_steps=0, dropout=0.0, grad_clip=0.01)
    _, sink = run(config, corpus, tmp_path)
    logged = sink.rows[0][1]

    tokenizer = build_tokenizer("char", corpus)
    batches = Batches(config, make_splits(config, corpus, tokenizer), torch.device("cpu"))
    model = build_model(config, tokenizer.vocab_size)
    x, y = batches.train_batch(0)
    model(x, y)[1].backward()
    by_hand = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters()))

    assert logged["train/grad_norm"] == pytest.approx(by_hand, rel=1e-5)
    assert by_hand > 0.01 and logged["train/grad_clipped"] == 1.0


def test_every_step_and_eval_logs_the_canonical_keys(tmp_path: Path, corpus: str) -> None:
    config = tiny_config(max_steps=6, eval_interval=3, instrument_interval=2)
    result, sink = run(config, corpus, tmp_path)
    assert result.status == "completed"
    rows = dict(sink.rows)
    assert sorted(rows) == list(range(6))
    for step, row in rows.items():
        assert STEP_KEYS <= set(row), step
        # An MFU above 100% (a CPU peak probed under load) is logged apart, never as MFU.
        assert ("perf/mfu" in row) != ("perf/mfu_unreliable" in row), step
        assert row.get("perf/mfu", 0.0) <= 1.0 < row.get("perf/mfu_unreliable", 2.0)
        assert all(isinstance(v, float) for v in row.values())
        assert ("val/loss" in row) == (step in (0, 3, 5))
        assert ("train/loss_eval" in row) == (step in (0, 3, 5))
        assert ("act/h0.mlp/std" in row) == (step % 2 == 0)
    assert rows[0]["perf/peak_estimated"] == 1.0  # CPU: MFU against a probed peak
    assert rows[0]["train/lr"] == pytest.approx(config.lr / config.warmup_steps)
    assert "train/skipped" not in rows[0] and "train/resumed" not in rows[0]
    assert rows[0]["data/vocab_size"] == len(set(corpus))


def test_the_runs_log_reads_like_nanogpts(
    tmp_path: Path, corpus: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The dashboard's log viewer tails these lines: progress on instrument steps, each
    eval, each checkpoint, and how the run ended, with the numbers the metrics hold."""
    config = tiny_config(max_steps=6, eval_interval=3, instrument_interval=2, checkpoint_interval=4)
    with caplog.at_level("INFO", logger="trainer.train"):
        result, sink = run(config, corpus, tmp_path)
    rows = dict(sink.rows)
    lines = [r.getMessage() for r in caplog.records if r.name == "trainer.train"]
    progress = [line for line in lines if " ms, " in line]
    assert [line.split(":")[0] for line in progress] == ["step 0", "step 2", "step 4"]
    assert progress[1].startswith(f"step 2: loss {rows[2]['train/loss']:.4f}, ")
    evals = [line for line in lines if "val loss" in line]
    assert evals[0] == (
        f"step 0: val loss {rows[0]['val/loss']:.4f}, "
        f"train loss {rows[0]['train/loss_eval']:.4f} (eval)"
    )
    assert len(evals) == 3
    assert any(line.startswith("saved ckpt_latest") and "step 4" in line for line in lines)
    assert lines[-1] == f"{result.status} at step 6"


def test_instrument_keys_are_per_layer_in_depth_order(tmp_path: Path, corpus: str) -> None:
    config = tiny_config(max_steps=1, warmup_steps=0, n_layer=3)
    _, sink = run(config, corpus, tmp_path)
    row = sink.rows[0][1]
    for i in range(3):
        for stat in ("mean", "std", "absmax", "frac_saturated", "frac_dead"):
            assert f"act/h{i}.mlp/{stat}" in row
        for stat in ("mean", "std", "absmax"):
            assert f"act/h{i}.resid/{stat}" in row
    layers = ["wte", "wpe", "h0", "h1", "h2", "ln_f"]
    grads = [k.split("/")[1] for k in row if k.startswith("grad/") and k.endswith("/norm")]
    assert grads == layers
    assert all(row[f"grad/{layer}/frac_zero"] == 0.0 for layer in layers)  # fp32: no underflow
    assert all(row[f"param/{layer}/norm"] > 0 for layer in layers)
    # First AdamW step: every weight moves by ~lr, so the ratio is ~lr / typical |w|.
    assert all(0 < row[f"update/{layer}/ratio"] < 1 for layer in layers)
    assert 0 <= row["act/h0.mlp/frac_dead"] <= 1 and 0 <= row["act/h0.mlp/frac_saturated"] <= 1
    # Per-layer gradient norms add up (in squares) to the global pre-clip norm.
    total = math.sqrt(sum(row[f"grad/{layer}/norm"] ** 2 for layer in layers))
    assert total == pytest.approx(row["train/grad_norm"], rel=1e-4)


def test_a_step_moves_to_the_host_once(
    tmp_path: Path, corpus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One .tolist() per step (two with an eval), no .item(), from the trainer's code.

    Library internals are not counted: CPU AdamW reads its CPU step counter with
    .item(), which is a host read, not a device sync (fused CUDA AdamW does not).
    """
    trainer_dir = str(Path(train_module.__file__).parent)
    calls = {"tolist": 0, "item": 0}
    real = {"tolist": torch.Tensor.tolist, "item": torch.Tensor.item}

    def counting(name: str):  # noqa: ANN202
        def wrapper(self: torch.Tensor) -> object:
            if sys._getframe(1).f_code.co_filename.startswith(trainer_dir):
                calls[name] += 1
            return real[name](self)

        return wrapper

    config = tiny_config(
        max_steps=8, instrument_interval=1, eval_interval=100, sample_interval=100,
        checkpoint_interval=100,
    )  # fmt: skip
    monkeypatch.setattr(torch.Tensor, "tolist", counting("tolist"))
    monkeypatch.setattr(torch.Tensor, "item", counting("item"))
    run(config, corpus, tmp_path)
    evals = 2  # step 0 and the last step
    assert calls == {"tolist": config.max_steps + evals, "item": 0}


def test_step_values_travel_by_name() -> None:
    scalars = {
        "stop_votes": torch.tensor(1.0),
        "loss": torch.tensor(2.5),
        "grad_norm": torch.tensor(3.0),
    }
    values = StepValues.to_host(scalars, torch.arange(4.0).view(2, 2))
    assert values == StepValues(loss=2.5, grad_norm=3.0, stop_votes=1.0, instruments=[0, 1, 2, 3])
    assert StepValues.to_host(scalars, None).instruments == []


def test_mfu_is_omitted_when_the_peak_is_unknown(
    tmp_path: Path, corpus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "device_peak_flops", lambda device, precision: None)
    _, sink = run(tiny_config(max_steps=2), corpus, tmp_path)
    assert all("perf/mfu" not in row for _, row in sink.rows)
    assert all("perf/tokens_per_sec" in row for _, row in sink.rows)


def test_peak_table() -> None:
    assert mfu.table_peak_flops("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert mfu.table_peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert mfu.table_peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert mfu.table_peak_flops("NVIDIA H200", "fp16") == 989e12
    assert mfu.table_peak_flops("NVIDIA A10G", "bf16") is None  # not guessed as an A10
    assert mfu.table_peak_flops("NVIDIA Tesla V100-SXM2-16GB", "bf16") is None  # no bf16
    assert mfu.table_peak_flops("Some Future GPU", "bf16") is None
    assert mfu.cpu_peak_flops("fp32") > 1e8


def test_flops_per_token_formula() -> None:
    config = tiny_config(n_layer=12, n_head=12, n_embd=768, block_size=1024)
    n_params = 85_000_000
    expected = 6 * n_params + 12 * 12 * 12 * 64 * 1024
    assert mfu.flops_per_token(config, n_params) == expected


def test_a_skipped_step_leaves_the_weights_alone(tmp_path: Path, corpus: str) -> None:
    """With skip_loss_spikes a non-finite loss skips the update instead of poisoning the
    weights (the z-score path is exercised by the loss_spike preset test)."""
    config = tiny_config(
        max_steps=12, eval_interval=100, sample_interval=100, checkpoint_interval=100,
        actions={"skip_loss_spikes": True}, faults={"nan_step": 6},
    )  # fmt: skip
    result, sink = run(config, corpus, tmp_path)
    assert result.status == "completed"
    steps, skipped = sink.series("train/skipped")
    assert steps == list(range(12))  # logged every step when the action is on
    assert [s for s, v in zip(steps, skipped, strict=True) if v] == [6]
    _, loss = sink.series("train/loss")
    assert math.isnan(loss[6]) and all(math.isfinite(v) for v in loss[7:])


def test_nonfinite_values_are_logged_and_stop_the_run(tmp_path: Path, corpus: str) -> None:
    config = tiny_config(max_steps=20, checkpoint_interval=5, faults={"nan_step": 12})
    result, sink = run(config, corpus, tmp_path)
    assert result.status == "stopped" and "non-finite" in (result.reason or "")
    steps, loss = sink.series("train/loss")
    assert steps[-1] == 12 and math.isnan(loss[-1]) and all(map(math.isfinite, loss[:-1]))
    state = torch.load(tmp_path / "ckpt_latest.pt", weights_only=True)
    assert state["step"] == 10  # the last good checkpoint survives
    assert all(torch.isfinite(t).all() for t in state["model"].values())
