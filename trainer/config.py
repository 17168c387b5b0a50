"""The one typed training configuration.

The API validates it, the worker receives it, the checkpoint stores it. This module
must stay torch-free: the API process imports it and never loads torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainer.corpus import BUILTIN_DATASET

# Size limits a real machine can meet: anything past them is a typo or a wish, and it
# is refused with the field and the limit named rather than failing in the worker.
MAX_LAYERS = 256
MAX_HEADS = 256
MAX_EMBD = 32_768
MAX_BLOCK_SIZE = 131_072
MAX_BATCH_SIZE = 65_536
MAX_GRAD_ACCUM = 4_096
MAX_STEPS = 10_000_000
MAX_EVAL_BATCHES = 10_000
MAX_NPROC = 1_024
MAX_SEED = 2**32 - 1
# Byte-level BPE: above the 256 byte symbols, up to GPT-2's vocabulary.
MIN_VOCAB, MAX_VOCAB, DEFAULT_BPE_VOCAB = 512, 50_257, 4_096


class EarlyStopConfig(BaseModel):
    """Stop a run whose val/loss has not improved by min_delta for patience evaluations."""

    model_config = ConfigDict(extra="forbid")

    patience: int = Field(default=5, ge=1, le=10_000)
    min_delta: float = Field(default=0.0, ge=0)


class LRFinderConfig(BaseModel):
    """An LR range test: the LR grows exponentially from start_lr to end_lr over max_steps
    and the run ends when the smoothed loss diverges (Smith 2017; fastai's lr_find)."""

    model_config = ConfigDict(extra="forbid")

    start_lr: float = Field(default=1e-6, gt=0)
    end_lr: float = Field(default=1.0, gt=0, le=1_000)
    # EMA factor of the smoothed loss (bias-corrected)
    smoothing: float = Field(default=0.9, ge=0, lt=1)
    # diverged: smoothed loss above this multiple of its minimum
    divergence: float = Field(default=4.0, gt=1)


class ActionsConfig(BaseModel):
    """What the system does on its own when something goes wrong."""

    model_config = ConfigDict(extra="forbid")

    stop_on_nonfinite: bool = True
    skip_loss_spikes: bool = False
    spike_zscore: float = Field(default=6.0, gt=0)
    webhook_url: str | None = None
    # Stop when val/loss has not improved for `patience` evaluations; ckpt_best is kept.
    early_stop: EarlyStopConfig | None = None


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
    stall_steps: int = Field(default=0, ge=0, le=MAX_STEPS)
    stall_seconds: float = Field(default=0.0, ge=0, le=60)
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
    # After its first ckpt_latest the process hangs, deaf to SIGTERM and to the API's
    # stop (as one stuck in I/O or a collective would): its worker has to kill it.
    hang_after_checkpoint: bool = False


class TrainConfig(BaseModel):
    """Model, data, optimisation and instrumentation settings for one run."""

    model_config = ConfigDict(extra="forbid")

    # model
    n_layer: int = Field(default=4, gt=0, le=MAX_LAYERS)
    n_head: int = Field(default=4, gt=0, le=MAX_HEADS)
    n_embd: int = Field(default=128, gt=0, le=MAX_EMBD)
    block_size: int = Field(default=128, gt=0, le=MAX_BLOCK_SIZE)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    bias: bool = False
    # optimisation
    batch_size: int = Field(default=16, gt=0, le=MAX_BATCH_SIZE)
    grad_accum_steps: int = Field(default=1, gt=0, le=MAX_GRAD_ACCUM)
    max_steps: int = Field(default=600, gt=0, le=MAX_STEPS)
    lr: float = Field(default=2e-3, gt=0)
    min_lr: float = Field(default=2e-4, ge=0)
    warmup_steps: int = Field(default=50, ge=0, le=MAX_STEPS)
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    weight_decay: float = Field(default=0.1, ge=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    grad_clip: float = Field(default=1.0, ge=0)  # 0 = off
    # evaluation and bookkeeping
    eval_interval: int = Field(default=100, gt=0, le=MAX_STEPS)
    eval_batches: int = Field(default=20, gt=0, le=MAX_EVAL_BATCHES)
    checkpoint_interval: int = Field(default=200, gt=0, le=MAX_STEPS)
    instrument_interval: int = Field(default=25, gt=0, le=MAX_STEPS)
    sample_interval: int = Field(default=200, gt=0, le=MAX_STEPS)
    # runtime
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    grad_checkpointing: bool = False
    seed: int = Field(default=1337, ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    nproc: int = Field(default=1, gt=0, le=MAX_NPROC)
    # data
    dataset: str = Field(default=BUILTIN_DATASET, min_length=1)
    tokenizer: Literal["char", "byte", "bpe"] = "char"
    # bpe only: the trained vocabulary's size, also the model's (default 4096 with bpe)
    vocab_size: int | None = Field(default=None, ge=MIN_VOCAB, le=MAX_VOCAB)
    val_fraction: float = Field(default=0.1, gt=0, le=0.5)
    # diagnostics
    rules: dict[str, dict[str, Any]] = Field(default_factory=dict)
    actions: ActionsConfig = Field(default_factory=ActionsConfig)
    faults: FaultConfig = Field(default_factory=FaultConfig)
    # set: this run is an LR range test, not a training run (the `lr_finder` preset)
    lr_finder: LRFinderConfig | None = None

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.tokenizer == "bpe" and self.vocab_size is None:
            self.vocab_size = DEFAULT_BPE_VOCAB
        elif self.tokenizer != "bpe" and self.vocab_size is not None:
            raise ValueError(
                f"vocab_size applies to tokenizer 'bpe' only (the {self.tokenizer} "
                "tokenizer's vocabulary is fixed by the text)"
            )
        finder = self.lr_finder
        if finder is not None and finder.start_lr >= finder.end_lr:
            raise ValueError(
                f"lr_finder.start_lr ({finder.start_lr:g}) must be < end_lr ({finder.end_lr:g})"
            )
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
