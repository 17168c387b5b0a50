"""Each scenario preset shows its symptom in its own metrics.

Runs are shortened (max_steps) where the symptom appears early; fault steps are the
presets' own. Everything is seeded, so on CPU every number here is reproducible.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.conftest import run
from trainer.corpus import builtin_corpus
from trainer.presets import preset_config
from trainer.sink import MemorySink

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus() -> str:
    """The full built-in corpus: presets are tuned on what the product trains on."""
    return builtin_corpus()


def run_preset(name: str, out: Path, text: str, **overrides: Any) -> tuple[Any, MemorySink]:
    # Samples cost time and show nothing here.
    config = preset_config(name, {"sample_interval": 10_000, **overrides})
    return run(config, text, out)


def median(values: list[float]) -> float:
    return statistics.median(values)


def test_healthy(tmp_path: Path, corpus: str) -> None:
    result, sink = run_preset(
        "healthy", tmp_path, corpus, max_steps=81, eval_interval=40, eval_batches=8
    )
    assert result.status == "completed"
    _, loss = sink.series("train/loss")
    _, clipped = sink.series("train/grad_clipped")
    _, val = sink.series("val/loss")
    _, train_eval = sink.series("train/loss_eval")
    vocab = sink.rows[0][1]["data/vocab_size"]
    assert abs(loss[0] - math.log(vocab)) < 0.3  # starts at chance
    assert median(loss[-10:]) < 0.65 * loss[0]  # and learns
    assert sum(clipped[50:]) / len(clipped[50:]) < 0.5  # clipping fades after warmup
    assert abs(val[-1] - train_eval[-1]) < 0.15 and val[-1] < val[0]


def test_lr_too_high(tmp_path: Path, corpus: str) -> None:
    _, sink = run_preset("lr_too_high", tmp_path, corpus, max_steps=150)
    _, loss = sink.series("train/loss")
    _, clipped = sink.series("train/grad_clipped")
    assert sum(clipped) / len(clipped) > 0.5  # clipping on most steps
    assert max(loss[1:20]) > 2 * loss[0]  # blows up far above chance
    _, dead = sink.series("act/h1.mlp/frac_dead")
    _, absmax = sink.series("act/h1.resid/absmax")
    _, ratio = sink.series("update/h1/ratio")
    assert median(dead[5:]) > 0.3 and median(absmax[5:]) > 100 and median(ratio[5:]) > 1e-2


def rebound(loss: list[float]) -> float:
    """How far the loss climbs back above its running minimum."""
    return max(v - min(loss[: i + 1]) for i, v in enumerate(loss))


def test_no_warmup(tmp_path: Path, corpus: str) -> None:
    config = preset_config("no_warmup")
    _, sink = run_preset("no_warmup", tmp_path, corpus, max_steps=60)
    _, lr = sink.series("train/lr")
    _, loss = sink.series("train/loss")
    assert lr[0] == pytest.approx(config.lr)  # full LR at step 0
    assert rebound(loss[:8]) > 1.0  # drops, then climbs back up within a few steps
    _, warm = run_preset("no_warmup", tmp_path / "warm", corpus, max_steps=60, warmup_steps=50)
    assert rebound(warm.series("train/loss")[1][:8]) < 0.3  # warmup removes the bump


def test_lr_too_low(tmp_path: Path, corpus: str) -> None:
    _, sink = run_preset("lr_too_low", tmp_path, corpus, max_steps=150)
    _, loss = sink.series("train/loss")
    start, end = statistics.mean(loss[:20]), statistics.mean(loss[-20:])
    assert 0 <= start - end < 0.03 * start  # barely falls: a plateau near ln(vocab)
    ratios = [v for k in ("h0", "h1") for v in sink.series(f"update/{k}/ratio")[1][2:]]
    assert median(ratios) < 3e-4  # healthy runs update ~1e-3..1e-2 of the weights per step


def test_bad_init(tmp_path: Path, corpus: str) -> None:
    _, sink = run_preset("bad_init", tmp_path, corpus, max_steps=80)
    _, loss = sink.series("train/loss")
    vocab = sink.rows[0][1]["data/vocab_size"]
    assert loss[0] > 1.5 * math.log(vocab)
    assert median(loss[-10:]) < 0.3 * loss[0]  # the hockey stick comes down


def test_overfit(tmp_path: Path, corpus: str) -> None:
    _, sink = run_preset("overfit", tmp_path, corpus, max_steps=251)
    steps, val = sink.series("val/loss")
    _, train_eval = sink.series("train/loss_eval")
    best = val.index(min(val))
    assert 0 < best < len(val) - 2
    assert val[-1] > min(val) + 0.2  # val turns and rises...
    assert train_eval[-1] < train_eval[best] - 0.3  # ...while train keeps falling


def test_leaky_val(tmp_path: Path, corpus: str) -> None:
    _, sink = run_preset("leaky_val", tmp_path, corpus, max_steps=251)
    _, val = sink.series("val/loss")
    _, train_eval = sink.series("train/loss_eval")
    assert all(abs(v - t) < 1e-6 for v, t in zip(val, train_eval, strict=True))  # val == train
    assert val[-1] < val[1] - 0.5  # and falls with it, on a corpus the model memorises


def test_loss_spike_and_skipping_it(tmp_path: Path, corpus: str) -> None:
    spike = preset_config("loss_spike").faults.spike_step
    assert spike is not None
    _, sink = run_preset(
        "loss_spike", tmp_path, corpus, max_steps=spike + 10, actions={"skip_loss_spikes": True}
    )
    _, loss = sink.series("train/loss")
    _, norm = sink.series("train/grad_norm")
    before = median(loss[spike - 20 : spike])
    assert loss[spike] > 1.5 * before  # the bad batch
    assert norm[spike] > 5 * median(norm[spike - 20 : spike])
    assert median(loss[spike + 1 :]) < 1.1 * before  # and recovery
    steps, skipped = sink.series("train/skipped")
    assert [s for s, v in zip(steps, skipped, strict=True) if v] == [spike]


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, corpus: str) -> None:
    config = preset_config("nan")
    nan_step = config.faults.nan_step
    assert nan_step is not None
    result, sink = run_preset("nan", tmp_path, corpus)
    steps, loss = sink.series("train/loss")
    assert result.status == "stopped" and steps[-1] == nan_step
    assert math.isnan(loss[-1]) and all(math.isfinite(v) for v in loss[:-1])
    state = torch.load(tmp_path / "ckpt_latest.pt", weights_only=True)
    last_good = nan_step // config.checkpoint_interval * config.checkpoint_interval
    assert state["step"] == last_good and math.isfinite(state["best_val_loss"])
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_slow_data(tmp_path: Path, corpus: str) -> None:
    faults = preset_config("slow_data").faults
    start, stall, length = faults.stall_step, faults.stall_seconds, 20  # a shorter stall
    assert start is not None
    _, sink = run_preset(
        "slow_data", tmp_path, corpus, max_steps=start + length + 20,
        faults={"stall_steps": length},
    )  # fmt: skip
    steps, step_ms = sink.series("perf/step_ms")
    _, tokens_per_sec = sink.series("perf/tokens_per_sec")
    inside = [i for i in steps if start <= i < start + length]
    outside = [i for i in steps if 10 <= i < start or i >= start + length]
    # Additive, so it holds however busy the machine is: each stalled step waits out the sleep.
    assert min(step_ms[i] for i in inside) >= 1000 * stall
    assert median([tokens_per_sec[i] for i in inside]) < 0.5 * median(
        [tokens_per_sec[i] for i in outside]
    )


def test_resume_without_optimizer(tmp_path: Path, corpus: str) -> None:
    restart = preset_config("resume_without_optimizer").faults.restart_at_step
    assert restart is not None
    _, sink = run_preset("resume_without_optimizer", tmp_path, corpus, max_steps=restart + 10)
    assert [s for s, row in sink.rows if "train/resumed" in row] == [restart]
    _, loss = sink.series("train/loss")
    _, grad_norm = sink.series("train/grad_norm")
    # loss[restart] is measured before the first fresh-Adam update; the jump follows it.
    # Fresh moments move every weight by ~lr at once: the gradient norm jumps
    # and the loss rises over the next steps (by how much depends on the corpus).
    before, after = slice(restart - 20, restart), slice(restart + 1, restart + 6)
    assert statistics.mean(grad_norm[after]) > 1.3 * statistics.mean(grad_norm[before])
    assert statistics.mean(loss[after]) > statistics.mean(loss[before]) + 0.1


def test_fp16_without_scaler_flushes_gradients_to_zero(tmp_path: Path, corpus: str) -> None:
    short = {"max_steps": 11, "warmup_steps": 5, "instrument_interval": 5}
    _, bare = run_preset("fp16_no_scaler", tmp_path / "bare", corpus, **short)
    scaled_faults = {"fp16_no_scaler": False}
    _, scaled = run_preset("fp16_no_scaler", tmp_path / "scaled", corpus, **short,
                           faults=scaled_faults)  # fmt: skip

    def zero_fractions(sink: MemorySink) -> list[float]:
        return [v for _, row in sink.rows for k, v in row.items() if k.endswith("/frac_zero")]

    assert max(zero_fractions(bare)) > 1e-3  # underflow: gradient entries are exactly 0
    assert max(zero_fractions(scaled)) == 0.0  # the GradScaler prevents it
    assert all("train/skipped" not in row for _, row in bare.rows)  # no scaler at all
    assert any("train/skipped" in row for _, row in scaled.rows)
