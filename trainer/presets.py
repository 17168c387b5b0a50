"""Scenario presets: one healthy run and one run per classic failure mode.

Presets are data: a name, what the user will see, which rule codes the rule engine
should raise, and TrainConfig overrides. Each is small enough to show its symptom on a
laptop CPU within two minutes. Torch-free: the API lists them.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from trainer.config import TrainConfig


class Preset(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    title: str
    description: str  # the symptom, as the user will see it on the dashboard
    expected_findings: list[str]  # rule codes the rule engine should raise
    overrides: dict[str, Any]


# A small, fast model shared by the failure presets: ~100k parameters, ~20 ms a step
# on two CPU cores, so each symptom appears within a minute.
_SMALL: dict[str, Any] = {
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 64,
    "block_size": 64,
    "batch_size": 16,
    "eval_interval": 25,
    "eval_batches": 10,
    "instrument_interval": 10,
    "sample_interval": 100,
    "checkpoint_interval": 100,
}


def _small(**overrides: Any) -> dict[str, Any]:
    return {**copy.deepcopy(_SMALL), **overrides}


# Memorisable: a 6k-character corpus with 30% held out and a wider model.
_TINY_CORPUS: dict[str, Any] = {
    "n_embd": 128,
    "lr": 6e-3,
    "min_lr": 6e-3,
    "schedule": "constant",
    "warmup_steps": 20,
    "val_fraction": 0.3,
    "max_steps": 600,
    "faults": {"corpus_chars": 6000},
}


_PRESETS = [
    Preset(
        name="healthy",
        title="Healthy run",
        description=(
            "Loss starts near ln(vocab), falls smoothly and flattens; val tracks train; "
            "gradient norms settle below the clip threshold after warmup."
        ),
        expected_findings=[],
        overrides={},
    ),
    Preset(
        name="lr_too_high",
        title="Learning rate too high",
        description=(
            "Adam at lr 1.0: the loss shoots far above its starting value within a few steps, "
            "the gradient norm is clipped on most steps, the residual stream blows up, most "
            "MLP units die, and the loss stalls well above a healthy run's."
        ),
        expected_findings=[
            "clip_saturation",
            "divergence",
            "loss_spike",
            "dead_units",
            "activation_scale",
            "update_ratio",
        ],  # fmt: skip
        overrides=_small(lr=1.0, min_lr=1.0, schedule="constant", warmup_steps=0, max_steps=300),
    ),
    Preset(
        name="no_warmup",
        title="No learning-rate warmup",
        description=(
            "Full learning rate (5e-2) from step 0: after a first drop the loss climbs back "
            "above its starting value within ten steps, then recovers; the same learning "
            "rate with warmup descends smoothly."
        ),
        expected_findings=["lr_schedule", "loss_spike"],
        overrides=_small(lr=0.05, min_lr=0.005, warmup_steps=0, max_steps=300),
    ),
    Preset(
        name="lr_too_low",
        title="Learning rate too low (plateau)",
        description=(
            "The loss barely moves from its initial value; updates are a tiny fraction of "
            "the weights."
        ),
        expected_findings=["plateau", "update_ratio"],
        overrides=_small(lr=2e-6, min_lr=2e-7, warmup_steps=10, max_steps=300),
    ),
    Preset(
        name="bad_init",
        title="Bad output-layer initialisation",
        description=(
            "The output layer (the LM head, tied to the token embedding) starts 30x too "
            "large, so the first loss sits far above ln(vocab) and the first ~50 steps only "
            "undo the init: a hockey stick."
        ),
        expected_findings=["init_loss"],
        overrides=_small(faults={"output_init_scale": 30.0}, max_steps=300),
    ),
    Preset(
        name="overfit",
        title="Overfitting a tiny corpus",
        description=(
            "A 6,000-character corpus, no dropout, a constant high learning rate: train "
            "loss keeps falling while val loss bottoms out after ~100 steps and climbs."
        ),
        expected_findings=["overfit"],
        overrides=_small(**_TINY_CORPUS),
    ),
    Preset(
        name="leaky_val",
        title="Validation leaking from training data",
        description=(
            "The overfit setup, but the val loader reads the training text: val loss "
            "equals the train estimate all the way down, so overfitting is invisible."
        ),
        expected_findings=["train_val_leak"],
        overrides=_small(**{**_TINY_CORPUS, "faults": {"corpus_chars": 6000, "leak_val": True}}),
    ),
    Preset(
        name="loss_spike",
        title="Loss spike from a bad batch",
        description=(
            "At step 150 one batch is a wall of a single repeated token: the loss jumps "
            "several-fold for that step, the gradient norm spikes, then training recovers."
        ),
        expected_findings=["loss_spike", "grad_norm_spike"],
        overrides=_small(max_steps=300, faults={"spike_step": 150}),
    ),
    Preset(
        name="nan",
        title="Non-finite loss",
        description=(
            "At step 120 a NaN enters the loss; the weights become NaN, the run stops and "
            "the last good checkpoint (step 100) is kept."
        ),
        expected_findings=["nonfinite"],
        overrides=_small(max_steps=300, faults={"nan_step": 120}),
    ),
    Preset(
        name="fp16_no_scaler",
        title="fp16 without loss scaling",
        description=(
            "fp16 autocast with no GradScaler: small gradients underflow to exactly zero. "
            "At this size the loss curve still matches a scaled run; the symptom is in the "
            "gradient instruments, grad/{layer}/frac_zero > 0 (a scaled or fp32 run has "
            "none). At GPU-scale token counts (~100k+ tokens a step) the flushed fraction "
            "grows until the lower layers stop learning and the loss plateaus. On CPUs "
            "without native fp16 matmuls the run is also several times slower than fp32."
        ),
        # No listed rule reads grad/*/frac_zero yet; at this size nothing else fires.
        expected_findings=[],
        overrides=_small(precision="fp16", max_steps=200, faults={"fp16_no_scaler": True}),
    ),
    Preset(
        name="slow_data",
        title="Data loader stall",
        description=(
            "From step 100 the loader stalls 0.1 s per batch for 50 steps: tokens/s and MFU "
            "drop several-fold, then recover; the loss curve itself looks normal."
        ),
        expected_findings=["throughput_drop", "low_mfu"],
        overrides=_small(
            max_steps=300,
            faults={"stall_step": 100, "stall_steps": 50, "stall_seconds": 0.1},
        ),
    ),
    Preset(
        name="resume_without_optimizer",
        title="Resume without optimizer state",
        description=(
            "At step 150 the run restarts from its checkpoint with a fresh AdamW (beta2 "
            "0.999, PyTorch's default): the first update moves every weight by the full "
            "learning rate and the loss jumps right after the resume marker, then takes "
            "tens of steps to recover."
        ),
        expected_findings=["resume_discontinuity", "loss_spike"],
        overrides=_small(
            n_layer=4,
            n_embd=128,
            lr=1e-2,
            min_lr=1e-2,
            schedule="constant",
            warmup_steps=20,
            beta2=0.999,
            max_steps=300,
            faults={"restart_at_step": 150, "drop_optimizer_on_resume": True},
        ),  # fmt: skip
    ),
]

# Rules an LR range test trips on purpose: it drives the LR up until the loss diverges.
_SWEEP_TRIPS = (
    "divergence", "loss_spike", "grad_norm_spike", "clip_saturation", "plateau", "nonfinite",
    "update_ratio", "activation_scale", "activation_saturation", "dead_units", "lr_schedule",
)  # fmt: skip

_PRESETS.append(
    Preset(
        name="lr_finder",
        title="LR range finder",
        description=(
            "Not a training run: from a fresh model the learning rate grows exponentially "
            "from 1e-6 to 10 over 200 steps and the run ends when the smoothed loss "
            "diverges (4x its minimum). The run page plots loss against LR and suggests a "
            "tenth of the LR at the smoothed loss's minimum, with a button to launch it."
        ),
        expected_findings=[],
        overrides=_small(
            max_steps=200,
            warmup_steps=0,
            schedule="constant",
            eval_interval=1000,
            sample_interval=1000,
            checkpoint_interval=1000,
            lr_finder={"start_lr": 1e-6, "end_lr": 10.0},
            rules={code: {"enabled": False} for code in _SWEEP_TRIPS},
        ),
    )
)

PRESETS: dict[str, Preset] = {preset.name: preset for preset in _PRESETS}


def list_presets() -> list[Preset]:
    return list(PRESETS.values())


def preset_overrides(name: str) -> dict[str, Any]:
    """A copy of a preset's overrides (safe to modify)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; known presets: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name].overrides)


def preset_config(name: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The preset's TrainConfig, with `overrides` on top (nested dicts merged)."""
    settings = preset_overrides(name)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    return TrainConfig.model_validate(settings)


def _check_presets() -> None:
    """Presets are data, but data that must validate: fail at import, not at launch."""
    for preset in _PRESETS:
        try:
            TrainConfig.model_validate(preset.overrides)
        except ValidationError as exc:  # pragma: no cover - a broken preset is a bug
            raise RuntimeError(f"preset '{preset.name}' is invalid: {exc}") from exc


_check_presets()
