"""The one typed training configuration.

The API validates it, the worker receives it, the checkpoint stores it. This module
must stay torch-free: the API process imports it and never loads torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainer.corpus import BUILTIN_DATASET


class ActionsConfig(BaseModel):
    """What the system does on its own when something goes wrong."""

    model_config = ConfigDict(extra="forbid")

    stop_on_nonfinite: bool = True
    skip_loss_spikes: bool = False
    spike_zscore: float = Field(default=6.0, gt=0)
    webhook_url: str | None = None


class FaultConfig(BaseModel):
    """Deliberate faults for the scenario presets. Everything is off by default."""

    model_config = ConfigDict(extra="forbid")

    # Scales the init std of the output layer (the LM head, tied to the token embedding).
    output_init_scale: float = Field(default=1.0, gt=0)
    # At this step every micro-batch is replaced by a wall of one repeated (rare) token.
    spike_step: int | None = Field(default=None, ge=0)
    # At this step a NaN is injected into the loss before backward.
    nan_step: int | None = Field(default=None, ge=0)
    # From stall_step, for stall_steps steps, the loader sleeps stall_seconds per batch.
    stall_step: int | None = Field(default=None, ge=0)
    stall_steps: int = Field(default=0, ge=0)
    stall_seconds: float = Field(default=0.0, ge=0)
    # The val loader reads the training split (same windows as the train estimate).
    leak_val: bool = False
    # Keep only the first corpus_chars characters of the corpus (for overfitting).
    corpus_chars: int | None = Field(default=None, ge=1000)
    # fp16 autocast without a GradScaler.
    fp16_no_scaler: bool = False
    # On resume, load the weights but start the optimizer from scratch.
    drop_optimizer_on_resume: bool = False
    # At this step the run checkpoints, tears down and resumes in-process, as after a
    # crash: this is how a single launch demonstrates resume faults.
    restart_at_step: int | None = Field(default=None, gt=0)


class TrainConfig(BaseModel):
    """Model, data, optimisation and instrumentation settings for one run."""

    model_config = ConfigDict(extra="forbid")

    # model
    n_layer: int = Field(default=4, gt=0)
    n_head: int = Field(default=4, gt=0)
    n_embd: int = Field(default=128, gt=0)
    block_size: int = Field(default=128, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    bias: bool = False
    # optimisation
    batch_size: int = Field(default=16, gt=0)
    grad_accum_steps: int = Field(default=1, gt=0)
    max_steps: int = Field(default=600, gt=0)
    lr: float = Field(default=2e-3, gt=0)
    min_lr: float = Field(default=2e-4, ge=0)
    warmup_steps: int = Field(default=50, ge=0)
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    weight_decay: float = Field(default=0.1, ge=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    grad_clip: float = Field(default=1.0, ge=0)  # 0 = off
    # evaluation and bookkeeping
    eval_interval: int = Field(default=100, gt=0)
    eval_batches: int = Field(default=20, gt=0)
    checkpoint_interval: int = Field(default=200, gt=0)
    instrument_interval: int = Field(default=25, gt=0)
    sample_interval: int = Field(default=200, gt=0)
    # runtime
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    grad_checkpointing: bool = False
    seed: int = Field(default=1337, ge=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    nproc: int = Field(default=1, gt=0)
    # data
    dataset: str = Field(default=BUILTIN_DATASET, min_length=1)
    tokenizer: Literal["char", "byte"] = "char"
    val_fraction: float = Field(default=0.1, gt=0, le=0.5)
    # diagnostics
    rules: dict[str, dict[str, Any]] = Field(default_factory=dict)
    actions: ActionsConfig = Field(default_factory=ActionsConfig)
    faults: FaultConfig = Field(default_factory=FaultConfig)

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr:g}) must not exceed lr ({self.lr:g})")
        if self.warmup_steps >= self.max_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be < max_steps ({self.max_steps})"
            )
        faults = self.faults
        for name in ("spike_step", "nan_step", "stall_step", "restart_at_step"):
            step = getattr(faults, name)
            if step is not None and step >= self.max_steps:
                raise ValueError(f"faults.{name} ({step}) must be < max_steps ({self.max_steps})")
        if faults.fp16_no_scaler and self.precision != "fp16":
            raise ValueError(
                f"faults.fp16_no_scaler requires precision 'fp16' (got '{self.precision}')"
            )
        if faults.stall_step is not None and (faults.stall_steps < 1 or faults.stall_seconds <= 0):
            raise ValueError(
                "faults.stall_step needs faults.stall_steps >= 1 and faults.stall_seconds > 0"
            )
        return self

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def tokens_per_step(self) -> int:
        """Tokens consumed by one optimizer step across all processes."""
        return self.batch_size * self.block_size * self.grad_accum_steps * self.nproc
