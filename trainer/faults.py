"""Deliberate faults, for the scenario presets and the worker's tests: every
`config.faults` setting acts here.

The trainer calls these named hooks at fixed points (the corpus, the split, each
training batch, each micro-batch loss, the output layer's init, the grad scaler, the
top of each step, a resume, a checkpoint written); each hook is a no-op unless its
fault is set, so the training code reads as if faults did not exist.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import torch

from trainer.config import FaultConfig

log = logging.getLogger(__name__)


class Faults:
    """The hooks for one run's FaultConfig."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config

    # -- data ------------------------------------------------------------------------------

    def corpus(self, text: str) -> str:
        """corpus_chars: a corpus small enough to memorise (the overfit scenarios)."""
        chars = self.config.corpus_chars
        return text if chars is None else text[:chars]

    def held_out(self, train: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
        """leak_val: the "held-out" tokens are the training tokens."""
        return train if self.config.leak_val else val

    def eval_split(self, split: str) -> str:
        """leak_val: the flagrant leak, the val loader is the train loader (same windows)."""
        return "train" if self.config.leak_val else split

    def train_batch(
        self, step: int, x: torch.Tensor, y: torch.Tensor, spike_token: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """spike_step: a wall of one rare token; stall_*: a loader that cannot keep up."""
        config = self.config
        if config.spike_step == step:
            x = torch.full_like(x, spike_token)  # (B, T)
            y = torch.full_like(y, spike_token)  # (B, T)
        if config.stall_step is not None and 0 <= step - config.stall_step < config.stall_steps:
            time.sleep(config.stall_seconds)
        return x, y

    # -- model and precision ----------------------------------------------------------------

    def init_output_layer(self, weight: torch.Tensor) -> None:
        """output_init_scale: an LM head initialised too large (or too small)."""
        scale = self.config.output_init_scale
        if scale != 1.0:
            with torch.no_grad():
                weight.mul_(scale)

    def allows_grad_scaler(self) -> bool:
        """fp16_no_scaler: fp16 without loss scaling, so small gradients flush to zero."""
        return not self.config.fp16_no_scaler

    # -- the step --------------------------------------------------------------------------

    def on_loss(self, step: int, micro: int, loss: torch.Tensor) -> torch.Tensor:
        """nan_step: a NaN in the first micro-batch's loss, before backward."""
        if self.config.nan_step == step and micro == 0:
            return loss * float("nan")
        return loss

    def restarts_before(self, step: int, start_step: int) -> bool:
        """restart_at_step: checkpoint, tear down and resume in-process, as after a crash
        (how one launch demonstrates the resume faults)."""
        return self.config.restart_at_step == step and step > start_step

    def keeps_optimizer_on_resume(self) -> bool:
        """drop_optimizer_on_resume: resume the weights with a fresh optimizer."""
        if self.config.drop_optimizer_on_resume:
            log.warning("fault drop_optimizer_on_resume: optimizer state discarded")
            return False
        return True

    # -- the process ----------------------------------------------------------------------

    def after_checkpoint(self) -> None:
        """hang_after_checkpoint: never return, and ignore SIGTERM (the worker's kill
        after the grace period is what ends the process, its checkpoint whole on disk)."""
        if self.config.hang_after_checkpoint:
            log.warning("fault hang_after_checkpoint: hanging, deaf to SIGTERM")
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            threading.Event().wait()
