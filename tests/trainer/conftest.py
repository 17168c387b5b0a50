"""Shared fixtures: the built-in corpus, a tiny fast config and a run helper."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer.config import TrainConfig
from trainer.corpus import builtin_corpus
from trainer.sink import MemorySink

# Tiny models gain nothing from a second thread, and on a shared 2-core CI box OpenMP
# barriers between two threads cost more than the matmuls they split.
torch.set_num_threads(1)

SHAKESPEARE = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"

# Small enough that a step takes a few ms on one CPU core.
TINY: dict[str, Any] = {
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "batch_size": 8,
    "max_steps": 20,
    "warmup_steps": 1,
    "eval_interval": 5,
    "eval_batches": 2,
    "instrument_interval": 5,
    "sample_interval": 10,
    "checkpoint_interval": 10,
    "dropout": 0.1,
}


def tiny_config(**overrides: Any) -> TrainConfig:
    settings = {**TINY, **overrides}
    return TrainConfig.model_validate(settings)


@pytest.fixture(scope="session")
def corpus() -> str:
    # A slice keeps tokenisation cheap; it is still real text with ~90 symbols.
    return builtin_corpus()[:200_000]


def run(config: TrainConfig, text: str, out_dir: Path, **kwargs: Any) -> tuple[Any, MemorySink]:
    from trainer.train import train

    sink = MemorySink()
    result = train(config, text, out_dir, sink, **kwargs)
    return result, sink


def finite(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values)
