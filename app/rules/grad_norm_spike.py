"""grad_norm_spike: the pre-clip gradient norm jumps far above its recent level."""

from __future__ import annotations

from pydantic import Field

from app.rules.base import Observation, Rule, RunView
from app.rules.spikes import SpikeThresholds, spike_observations


class GradNormSpikeThresholds(SpikeThresholds):
    # grad norms are heavy-tailed (healthy steps reach 2-3x their median) and swing
    # several-fold in the first steps: a spike is at least this multiple of the median
    ratio: float = Field(default=4.0, gt=1)
    # the ratio test waits until the early swings are in the window
    ratio_min_history: int = Field(default=16, ge=1)
    # heavy tails: sigma >= half the median, so 6 sigmas also means >= 4x the median
    sigma_floor: float = Field(default=0.5, ge=0)


class GradNormSpike(Rule):
    """The gradient norm (measured before clipping) jumped far above its level over the
    previous steps. A gradient-norm spike often comes a step or two before a loss spike:
    one batch, or one optimizer step, pushed the weights somewhere the loss is steep.
    Clipping limits the damage of a single spike; frequent spikes mean the run is close
    to instability."""

    code = "grad_norm_spike"
    title = "Gradient-norm spike"
    severity = "warning"
    fix = (
        "Check the batch at this step for bad data. Make sure grad_clip is on (1.0 is a "
        "common value). If spikes repeat, lower the learning rate, lengthen warmup, or "
        "lower Adam's beta2 (0.95); in mixed precision, look for overflowing activations."
    )
    thresholds = GradNormSpikeThresholds

    def check(self, view: RunView, limits: GradNormSpikeThresholds) -> list[Observation]:
        return spike_observations(view, "train/grad_norm", limits)
