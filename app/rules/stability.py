"""stability: the run's config lacks a piece of the standard stability stack."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.rules.base import Observation, Rule, RunView, Thresholds


class StabilityThresholds(Thresholds):
    # a peak learning rate at or above this, with warmup_steps 0, is a missing warmup
    warmup_min_lr: float = Field(default=1e-3, gt=0)
    # Adam's beta2 at or above this is slow to adapt for language models (0.95 is usual)
    max_beta2: float = Field(default=0.99, gt=0, le=1)


class Stability(Rule):
    """Language-model training is held stable by a small stack that nearly every
    recipe uses: a learning-rate warmup (Adam's moment estimates are noise for the first
    steps; a full learning rate on them throws the weights far off), gradient clipping
    at about 1.0 (one bad batch cannot move the weights far), AdamW with weight decay on
    the weight matrices, beta2 about 0.95 (the second moment adapts within tens of
    steps when gradients change), and pre-norm blocks. This run's config leaves one out.
    That is not a fault by itself; if the run later shows spikes or a divergence, this
    is the first thing to restore."""

    code = "stability"
    title = "Config check: stability stack"
    severity = "info"
    fix = (
        "Restore the missing piece: a linear warmup of a few hundred steps (1-5% of the "
        "run), grad_clip 1.0, AdamW with weight_decay about 0.1 on the weight matrices "
        "(not on biases and norms), beta2 0.95."
    )
    thresholds = StabilityThresholds

    def check(self, view: RunView, limits: StabilityThresholds) -> list[Observation]:
        loss = view.series("train/loss")
        if not len(loss) or int(loss.steps[0]) <= view.since_of("train/loss"):
            return []  # judged once, at the run's first loss
        step = int(loss.steps[0])
        return [
            Observation(step, True, subject=subject, evidence=evidence, detail=detail, fix=fix)
            for subject, evidence, detail, fix in _missing(view, limits)
        ]


def _missing(
    view: RunView, limits: StabilityThresholds
) -> list[tuple[str, dict[str, Any], str, str]]:
    """(subject, evidence, detail, fix) for each piece the config says is missing. A
    field the config does not mention says nothing (external scripts log what they like)."""
    found = []
    lr = view.config_number("lr")
    warmup = view.config_number("warmup_steps")
    if warmup == 0 and lr is not None and lr >= limits.warmup_min_lr:
        summary = f"no warmup at learning rate {lr:g}"
        found.append(
            (
                "warmup",
                {"summary": summary, "lr": lr, "warmup_steps": 0, "min_lr": limits.warmup_min_lr},
                f"The config has warmup_steps 0 at learning rate {lr:g}: the first updates are "
                "taken at the full rate on Adam's noisy first moment estimates, which risks an "
                "early loss spike or a divergence.",
                "Add a linear warmup: a few hundred steps, or about 1-5% of the run.",
            )
        )
    if "grad_clip" in view.config and not view.config_number("grad_clip"):
        found.append(
            (
                "grad_clip",
                {"summary": "no gradient clipping", "grad_clip": view.config.get("grad_clip")},
                "The config turns gradient clipping off (grad_clip is 0 or empty): one bad batch "
                "can move the weights arbitrarily far, the usual start of a loss spike.",
                "Set grad_clip 1.0 (clip_grad_norm_ on the global norm before the optimizer step).",
            )
        )
    if view.config_number("weight_decay") == 0:
        found.append(
            (
                "weight_decay",
                {"summary": "no weight decay", "weight_decay": 0},
                "The config has weight_decay 0: nothing holds the weight norms, which tend to "
                "grow over a long run and make the loss surface sharper.",
                "Use AdamW with weight_decay about 0.1 on the weight matrices only.",
            )
        )
    beta2 = view.config_number("beta2")
    if beta2 is not None and beta2 >= limits.max_beta2:
        found.append(
            (
                "beta2",
                {"summary": f"beta2 {beta2:g}", "beta2": beta2, "max_beta2": limits.max_beta2},
                f"The config has Adam beta2 {beta2:g}: the second-moment estimate averages over "
                f"~{1 / (1 - beta2):.0f} steps and lags when gradients grow, so updates get too "
                "large; language models usually train with 0.95.",
                "Set beta2 0.95.",
            )
        )
    return found
