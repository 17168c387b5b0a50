"""AdamW with weight decay on matrices only."""

from __future__ import annotations

import torch
import torch.nn as nn

from trainer.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: dim >= 2 (matmul weights, embeddings) decay; biases and norms do not.

    Decaying gains and biases only pulls them toward zero, which hurts and regularises
    nothing. Tied parameters appear once (named_parameters deduplicates them).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: TrainConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW; the fused CUDA kernel when on CUDA (one launch for all parameters)."""
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay),
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        fused=device_type == "cuda",
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the LR on every group, every step, so a resumed run cannot keep a stale one."""
    for group in optimizer.param_groups:
        group["lr"] = lr
