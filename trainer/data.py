"""The train/val split and random-window batches.

Batches are drawn from a dedicated generator (one per DDP rank) so the data order is
part of the checkpointed state and never shares randomness with dropout. Evaluation
uses a generator reseeded on every call: every eval scores the same windows, so the val
curve shows the model changing, not sampling noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.config import TrainConfig
from trainer.faults import Faults
from trainer.tokenizer import Tokenizer


@dataclass
class Splits:
    train: torch.Tensor  # (N_train,) int64 token ids
    val: torch.Tensor  # (N_val,) int64 token ids


def make_splits(config: TrainConfig, text: str, tokenizer: Tokenizer) -> Splits:
    """Contiguous split: the first 1 - val_fraction for training, the rest held out."""
    faults = Faults(config.faults)
    ids = torch.tensor(tokenizer.encode(faults.corpus(text)), dtype=torch.long)  # (N,)
    n_train = int(len(ids) * (1 - config.val_fraction))
    train, val = ids[:n_train], faults.held_out(ids[:n_train], ids[n_train:])
    for name, part in (("training", train), ("validation", val)):
        if len(part) < config.block_size + 2:
            raise ValueError(
                f"the corpus leaves {len(part)} {name} tokens, fewer than "
                f"block_size + 2 ({config.block_size + 2}); use a larger dataset, "
                f"a smaller block_size or a different val_fraction"
            )
    return Splits(train=train, val=val)


def random_windows(
    data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets from batch_size random windows of data."""
    starts = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    offsets = starts[:, None] + torch.arange(block_size + 1)  # (B, T + 1)
    window = data[offsets]  # (B, T + 1)
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()  # (B, T), (B, T)


def data_seed(seed: int, rank: int) -> int:
    """Per-rank data seed: ranks see different windows, reproducibly."""
    return seed * 1000 + 17 + rank


class Batches:
    """Training and evaluation batches, with the data faults of the scenario presets."""

    def __init__(self, config: TrainConfig, splits: Splits, device: torch.device, rank: int = 0):
        self.config = config
        self.faults = Faults(config.faults)
        self.splits = splits
        self.device = device
        self.generator = torch.Generator().manual_seed(data_seed(config.seed, rank))
        self.eval_seed = data_seed(config.seed, rank) + 1
        self._eval_cache: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        # The rarest training token: a wall of it is maximally surprising to the model.
        counts = torch.bincount(splits.train)
        present = torch.nonzero(counts).flatten()
        self.spike_token = int(present[counts[present].argmin()])

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type == "cuda":
            # Pinned memory + non_blocking lets the copy overlap the previous step.
            return (
                x.pin_memory().to(self.device, non_blocking=True),
                y.pin_memory().to(self.device, non_blocking=True),
            )
        return x.to(self.device), y.to(self.device)

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-batch for `step`: inputs (B, T) and targets (B, T)."""
        cfg = self.config
        x, y = random_windows(self.splits.train, cfg.batch_size, cfg.block_size, self.generator)
        return self._to_device(*self.faults.train_batch(step, x, y, self.spike_token))

    def eval_batches(self, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The fixed evaluation windows of a split ("train" or "val")."""
        split = self.faults.eval_split(split)
        if split not in self._eval_cache:
            data = self.splits.train if split == "train" else self.splits.val
            seed = self.eval_seed + (0 if split == "train" else 1)  # each split its windows
            generator = torch.Generator().manual_seed(seed)
            cfg = self.config
            self._eval_cache[split] = [
                self._to_device(*random_windows(data, cfg.batch_size, cfg.block_size, generator))
                for _ in range(cfg.eval_batches)
            ]
        return self._eval_cache[split]
