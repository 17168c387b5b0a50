"""Device and precision: where the model runs and in which number format."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from trainer.config import TrainConfig
from trainer.faults import Faults

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; DDP ranks take their local GPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", local_rank)
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but MPS is not available")
    return torch.device(requested)


def configure_backends(device: torch.device) -> None:
    if device.type == "cuda":
        # TF32 tensor cores for fp32 matmuls: ~8x the FP32 rate for a 10-bit mantissa
        # that training does not notice. The MFU table's fp32 column assumes it.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast_context(config: TrainConfig, device: torch.device) -> Any:
    """Autocast for bf16/fp16; a no-op context for fp32."""
    if config.precision == "fp32":
        return contextlib.nullcontext()
    if config.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision 'bf16' is not supported by this GPU; use 'fp16'")
    return torch.autocast(device_type=device.type, dtype=DTYPES[config.precision])


def make_grad_scaler(config: TrainConfig, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling or small gradients flush to zero; bf16/fp32 do not."""
    if config.precision != "fp16" or not Faults(config.faults).allows_grad_scaler():
        return None
    return torch.amp.GradScaler(device.type)
