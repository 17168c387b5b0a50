"""The memory budget against what the trainer really allocates, on CPU.

Measured: the bytes of the tensors resident before an instrumented training step
(weights, AdamW state, cached eval windows) plus the peak growth of tensor allocations
during the step, read from the profiler's allocation events (`profiled_peak_bytes`).
The estimate is a sum of terms that are never all live at once (the update snapshot
and the full activations, say), so it is an upper bound: measured/estimate must lie in
[0.8, 1.0] without gradient checkpointing and [0.6, 1.0] with it.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest
import torch

from trainer.config import TrainConfig
from trainer.distributed import init_distributed
from trainer.instruments import profiled_peak_bytes, tensor_bytes
from trainer.memory import advice, estimate_memory, parameter_count
from trainer.model import GPT
from trainer.sink import NullSink
from trainer.steps import StopFlag
from trainer.train import _Run

SIZES = [
    {"n_layer": 2, "n_embd": 64, "n_head": 4, "block_size": 64, "batch_size": 8},
    {"n_layer": 4, "n_embd": 128, "n_head": 4, "block_size": 128, "batch_size": 8},
    {"n_layer": 6, "n_embd": 192, "n_head": 6, "block_size": 128, "batch_size": 8},
]


def measured_bytes(config: TrainConfig, text: str, out: Path) -> tuple[int, int]:
    """(measured peak bytes of one instrumented step, the model's vocab size)."""
    run = _Run(config, text, out, NullSink(), None, StopFlag(), init_distributed("cpu"))
    run._setup(resume=False)
    run._evaluate(0)  # fills the eval window cache, as every run's first step does
    run._train_step(0, True, deque())  # creates AdamW's state
    state = [t for s in run.optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    windows = [t for pairs in run.batches._eval_cache.values() for xy in pairs for t in xy]
    resident = tensor_bytes([*run.model.parameters(), *state, *windows])
    peak = profiled_peak_bytes(lambda: run._train_step(1, True, deque()))
    return resident + peak, run.tokenizer.vocab_size


@pytest.mark.parametrize("size", SIZES, ids=["0.1M", "0.8M", "2.7M"])
def test_estimate_bounds_the_measured_peak(size: dict, tmp_path: Path, corpus: str) -> None:
    config = TrainConfig(**size, eval_batches=2, device="cpu", max_steps=10, warmup_steps=0)
    measured, vocab = measured_bytes(config, corpus[:100_000], tmp_path / "run")
    estimate = estimate_memory(config, vocab).total_bytes
    assert 0.8 <= measured / estimate <= 1.0, (measured, estimate)


def test_checkpointing_estimate_bounds_the_measured_peak(tmp_path: Path, corpus: str) -> None:
    config = TrainConfig(
        **SIZES[1], eval_batches=2, device="cpu", max_steps=10, warmup_steps=0,
        grad_checkpointing=True,
    )  # fmt: skip
    measured, vocab = measured_bytes(config, corpus[:100_000], tmp_path / "run")
    estimate = estimate_memory(config, vocab)
    assert 0.6 <= measured / estimate.total_bytes <= 1.0, (measured, estimate.total_bytes)
    assert estimate.activations == estimate.activations_with_checkpointing
    assert estimate.activations_with_checkpointing < estimate.activations_without_checkpointing


@pytest.mark.parametrize("bias", [False, True])
def test_parameter_count_matches_the_model(bias: bool) -> None:
    config = TrainConfig(n_layer=3, n_embd=96, n_head=4, block_size=48, bias=bias)
    model = GPT(config, 777)
    assert parameter_count(config, 777) == model.num_params(non_embedding=False)


def test_terms_sum_to_the_total_and_precision_is_accounted() -> None:
    fp32 = estimate_memory(TrainConfig(tokenizer="bpe", vocab_size=8192))
    bf16 = estimate_memory(TrainConfig(tokenizer="bpe", vocab_size=8192, precision="bf16"))
    for budget in (fp32, bf16):
        terms = budget.terms
        assert budget.total_bytes == sum(v for k, v in terms.items() if k != "parameters")
        assert terms["optimizer"] == 2 * terms["weights"] == 2 * terms["gradients"]
    assert fp32.terms["autocast_weights"] == 0
    assert bf16.terms["autocast_weights"] == 2 * bf16.parameters
    # The blocks' activations halve in 2-byte precision (the head's fp32 loss does not).
    deep = {"n_layer": 12, "n_embd": 768, "n_head": 12, "block_size": 1024, "tokenizer": "byte"}
    deep_fp32 = estimate_memory(TrainConfig(**deep))
    deep_bf16 = estimate_memory(TrainConfig(**deep, precision="bf16"))
    assert 0.5 < deep_bf16.activations / deep_fp32.activations < 0.7
    ddp = estimate_memory(TrainConfig(nproc=2))
    assert ddp.terms["ddp_buckets"] == ddp.terms["gradients"]


def test_advice_names_the_remedies_of_the_largest_term() -> None:
    config = TrainConfig(batch_size=4096, block_size=4096)
    name, _ = estimate_memory(config).largest_term()
    assert name == "activations"
    text = advice(config, name)
    assert "grad_accum_steps" in text and "grad_checkpointing" in text and "bf16" in text
