"""Other tools' metric names mapped to trainlens's canonical keys.

The rule engine judges `train/loss`, `val/loss`, `train/lr` and `train/grad_norm`; a
Trainer, a LightningModule or an old TensorBoard log names them `loss`, `eval_loss`,
`val_loss`, `learning_rate`, `lr-AdamW`, ... One table, used by every integration and by
the TensorBoard import, so the same name means the same thing wherever it comes from.
Names that are not in it are kept as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from trainlens.wire import METRIC_NAME_MAX_LENGTH, metric_name_error

# canonical key -> the names other tools give it, most specific first
ALIASES: dict[str, tuple[str, ...]] = {
    "train/loss": (
        "train_loss",
        "train_loss_step",
        "training_loss",
        "loss/train",
        "Loss/train",
        "loss",
    ),
    "val/loss": (
        "val_loss",
        "eval/loss",
        "eval_loss",
        "valid_loss",
        "validation_loss",
        "val_loss_epoch",
        "loss/val",
        "Loss/val",
    ),
    "train/lr": ("train/learning_rate", "learning_rate", "lr"),
    "train/grad_norm": ("train/grad_norm", "grad_norm", "grad_2.0_norm_total"),
}
# Lightning's LearningRateMonitor: `lr-AdamW`, and `lr-AdamW/pg1`... with several groups
_LR_MONITOR = re.compile(r"^lr-[^/\s]+$")
_LR_MONITOR_GROUP = re.compile(r"^lr-[^/\s]+/pg(\d+)$")
# what the wire rules refuse inside a metric name: replaced, so the point is kept
_UNSAFE = re.compile(r"[\s,]+")


class KeyMapper:
    """Maps names to canonical keys, one alias per canonical key: the first name seen
    for a key keeps it, so `loss` and `train_loss` logged side by side never write
    over each other (the second stays as it is). Sticky across calls, so a key means
    the same series for the whole run."""

    def __init__(self) -> None:
        self._claimed: dict[str, str] = {}  # canonical key -> the name that maps to it
        self._mapped: dict[str, str] = {}

    def prime(self, names: Iterable[str]) -> None:
        """Decide the mapping for names known up front (all tags of a TensorBoard run),
        so the most specific alias wins whatever order they come in."""
        names = set(names)
        for canonical, aliases in ALIASES.items():
            if canonical in names:
                self._claimed.setdefault(canonical, canonical)
            for alias in aliases:
                if alias in names:
                    self._claimed.setdefault(canonical, alias)
        for name in sorted(names):
            self.key(name)

    def key(self, name: str) -> str:
        mapped = self._mapped.get(name)
        if mapped is None:
            mapped = self._mapped[name] = self._decide(name)
        return mapped

    def _decide(self, name: str) -> str:
        canonical = _canonical(name)
        if canonical is not None and self._claimed.setdefault(canonical, name) == name:
            return canonical
        return safe_name(name)


def safe_name(name: str) -> str:
    """`name` if the server takes it; else with whitespace and commas replaced by `_`
    and cut to the longest name allowed, so a stray `eval acc` is kept, not refused."""
    if metric_name_error(name) is None:
        return name
    return _UNSAFE.sub("_", name.strip())[:METRIC_NAME_MAX_LENGTH] or "_"


def _canonical(name: str) -> str | None:
    for canonical, aliases in ALIASES.items():
        if name == canonical or name in aliases:
            return canonical
    if _LR_MONITOR.match(name):
        return "train/lr"
    group = _LR_MONITOR_GROUP.match(name)
    if group:
        return f"train/lr/group{int(group.group(1)) - 1}"
    return None


# run-config field the rules read -> names frameworks' hyperparameters give it
CONFIG_ALIASES: dict[str, tuple[str, ...]] = {
    "lr": ("learning_rate",),
    "grad_clip": ("gradient_clip_val", "max_grad_norm", "clip_grad_norm"),
    "warmup_steps": ("num_warmup_steps", "warmup"),
    "max_steps": ("num_training_steps", "total_steps"),
}
