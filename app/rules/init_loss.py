"""init_loss: the first training loss against ln(vocab_size), the loss of a uniform guess."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, Severity, Thresholds


class InitLossThresholds(Thresholds):
    # first loss above this multiple of ln(vocab_size): warning
    warning_ratio: float = Field(default=1.1, gt=1)
    # first loss above this multiple of ln(vocab_size): critical
    critical_ratio: float = Field(default=1.5, gt=1)
    # first loss below this multiple of ln(vocab_size): info (the targets may be leaking)
    low_ratio: float = Field(default=0.5, ge=0, lt=1)
    # a series whose first point comes later than this step did not start at init
    max_first_step: int = Field(default=1, ge=0)


class InitLoss(Rule):
    """A freshly initialised language model predicts every token about equally likely,
    so its first cross-entropy loss should sit close to ln(vocab_size). A first loss far
    above it means the model starts confidently wrong: the first steps of training are
    spent undoing the initialisation (a hockey-stick loss curve) and the run may never
    recover the lost ground. A first loss far below it is as suspicious: the model can
    see the answers it is asked to predict."""

    code = "init_loss"
    title = "Initial loss far from ln(vocab_size)"
    severity = "warning"
    fix = (
        "Check that vocab_size matches the tokenizer, that the loss is a mean over tokens "
        "(reduction='mean', not 'sum'), that the targets are the inputs shifted by one "
        "position, and that the output layer (LM head) is initialised small (std ~0.02 "
        "or scaled down), not at a large scale. A loss far below ln(vocab_size) usually "
        "means the targets leak into the inputs (labels not shifted, or a causal mask "
        "missing)."
    )
    thresholds = InitLossThresholds

    def check(self, view: RunView, limits: InitLossThresholds) -> list[Observation]:
        loss = view.series("train/loss")
        if not len(loss) or int(loss.steps[0]) > limits.max_first_step:
            return []
        vocab_size = view.vocab_size()
        if vocab_size is None or vocab_size < 2:
            return []
        # Judged once, at the first evaluation that has both the loss and the vocab size.
        marker = view.series("data/vocab_size")
        fresh = int(loss.steps[0]) > view.since_of("train/loss")
        if view.config_number("vocab_size") is None and len(marker):
            fresh |= int(marker.steps[0]) > view.since_of("data/vocab_size")
        if not fresh:
            return []
        step, first = int(loss.steps[0]), float(loss.values[0])
        if not np.isfinite(first):
            return []  # nonfinite's business
        expected = math.log(vocab_size)
        ratio = first / expected
        severity = _severity(ratio, limits)
        evidence = {
            "first_loss": first,
            "step": step,
            "vocab_size": int(vocab_size),
            "ln_vocab_size": round(expected, 4),
            "ratio": round(ratio, 3),
            "warning_ratio": limits.warning_ratio,
            "critical_ratio": limits.critical_ratio,
            "low_ratio": limits.low_ratio,
        }
        if severity is None:
            return [Observation(step, False, evidence=evidence)]
        where = "above" if ratio > 1 else "below"
        detail = (
            f"The first train/loss was {first:.4g} at step {step}, {ratio:.2f}x ln(vocab_size) "
            f"= {expected:.4g} (vocab {int(vocab_size)}): {where} the loss of a uniform guess."
        )
        return [Observation(step, True, severity=severity, evidence=evidence, detail=detail)]


def _severity(ratio: float, limits: InitLossThresholds) -> Severity | None:
    if ratio > limits.critical_ratio:
        return "critical"
    if ratio > limits.warning_ratio:
        return "warning"
    if ratio < limits.low_ratio:
        return "info"
    return None
