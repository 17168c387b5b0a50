"""Checkpoints: atomic writes, safe loads, exact RNG state.

A checkpoint is a plain dict of tensors and Python primitives, so it loads with
`torch.load(..., weights_only=True)`: no arbitrary unpickling. It is written to a
temporary file in the same directory, fsynced, then renamed over the old one, so a
kill at any moment leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "ckpt_latest.pt"
BEST = "ckpt_best.pt"


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the loop touches, as tensors and plain ints/lists (weights_only-safe)."""
    version, mt_state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(mt_state), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *map(_plain, np_state[2:])],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain(value: Any) -> int | float:
    return value.item() if hasattr(value, "item") else value


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically (temp file + fsync + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp*"):
        stale.unlink(missing_ok=True)  # left by a writer that was killed mid-write
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_checkpoint_info(path: Path, info: dict[str, Any]) -> None:
    """A small JSON file beside a checkpoint (`ckpt_latest.json`): its step and val loss,
    for the dashboard, whose API process never loads torch files."""
    target = path.with_suffix(".json")
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, target)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects."""
    return torch.load(path, map_location=map_location, weights_only=True)


@dataclass(frozen=True)
class CheckpointInfo:
    step: int  # optimizer steps completed; training resumes at this step
    best_val_loss: float | None
    config: dict[str, Any]
    seed: int


def read_checkpoint_info(path: Path) -> CheckpointInfo:
    """Step, best val loss and config of a checkpoint, without loading tensors into RAM."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return CheckpointInfo(
        step=int(state["step"]),
        best_val_loss=state.get("best_val_loss"),
        config=state["config"],
        seed=int(state["config"]["seed"]),
    )


def latest_checkpoint(out_dir: Path) -> Path | None:
    path = out_dir / LATEST
    return path if path.exists() else None
