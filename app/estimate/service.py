"""Which device a config is checked against, and whether its memory budget fits.

The API host may not be the training host, and the API never touches CUDA, so the
device is chosen from what the API can know:
- device "cpu" or "mps": this host's RAM (the embedded worker trains here; mps shares it).
- device "cuda": the GPU named by TRAINLENS_GPU_NAME, looked up in the known-GPU table;
  when it is unset or unknown, the largest GPU in the table, so only a config that fits
  no GPU at all is refused.
- device "auto": the named GPU when TRAINLENS_GPU_NAME is set, else this host's RAM.
A remote CPU worker with less RAM than this host is not known here; it fails as before.
"""

from __future__ import annotations

import psutil

from app.config import Settings
from app.errors import invalid
from app.estimate.schemas import EstimateOut
from trainer.config import TrainConfig
from trainer.memory import GPU_MEMORY_GB, advice, estimate_memory, gpu_memory_bytes

GB = 1e9


def device_budget(config: TrainConfig, settings: Settings) -> tuple[str, int]:
    """(what the config is checked against, its memory in bytes)."""
    gpu = settings.gpu_name
    if config.device == "cuda" or (config.device == "auto" and gpu):
        known = gpu_memory_bytes(gpu) if gpu else None
        if gpu and known is not None:
            return f"cuda ({gpu}, {known / GB:.0f} GB)", known
        largest, memory_gb = max(GPU_MEMORY_GB, key=lambda row: row[1])
        why = f"GPU {gpu!r} is not in the table" if gpu else "TRAINLENS_GPU_NAME is not set"
        return (
            f"cuda ({why}; checked against the largest known GPU, {largest[0]} {memory_gb:.0f} GB)",
            int(memory_gb * GB),
        )
    total = psutil.virtual_memory().total
    return f"{config.device} (this host's RAM, {total / GB:.0f} GB)", total


def estimate(config: TrainConfig, settings: Settings) -> EstimateOut:
    budget = estimate_memory(config)
    device, device_bytes = device_budget(config, settings)
    largest, _ = budget.largest_term()
    return EstimateOut(
        total_bytes=budget.total_bytes,
        fits=budget.total_bytes <= device_bytes,
        device=device,
        device_bytes=device_bytes,
        terms=budget.terms,
        activations_without_checkpointing=budget.activations_without_checkpointing,
        activations_with_checkpointing=budget.activations_with_checkpointing,
        largest_term=largest,
        advice=advice(config, largest),
    )


def refuse_if_too_big(config: TrainConfig, settings: Settings) -> None:
    """A 422 naming the largest term and what to change, when the config cannot fit."""
    result = estimate(config, settings)
    if result.fits:
        return
    largest = result.terms[result.largest_term]
    message = (
        f"needs an estimated {result.total_bytes / GB:.3g} GB per process, more than "
        f"{result.device}; the largest term is {result.largest_term} "
        f"({largest / GB:.3g} GB). Try {result.advice}. (POST /api/estimate gives the breakdown.)"
    )
    raise invalid("config", message)
