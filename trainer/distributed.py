"""Where the model runs: the device, its number format, and the DDP ranks (detect
torchrun, set up the process group, reduce across ranks).

Single-process runs go through the same DDP calls, which then do nothing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

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


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE/LOCAL_RANK)."""
    if "RANK" not in os.environ or env_world_size() <= 1:
        return DistInfo()
    info = DistInfo(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=env_world_size(),
    )
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def shutdown_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `tensor` over ranks in place (identity when single-process)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_to_main(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (collective)."""
    if not info.enabled:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
