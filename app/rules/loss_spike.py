"""loss_spike: the training loss jumps far above its recent level, then (usually) recovers."""

from __future__ import annotations

from pydantic import Field

from app.rules.base import Observation, Rule, RunView
from app.rules.spikes import SpikeThresholds, spike_observations


class LossSpikeThresholds(SpikeThresholds):
    # a loss 30% above the median of the steps before it is a spike: healthy steps stay
    # within ~15% of it, and this catches a jump in the first steps, before any z-score
    ratio: float = Field(default=1.3, gt=1)
    # the ratio test needs only one earlier value (the first steps matter most)
    ratio_min_history: int = Field(default=1, ge=1)


class LossSpike(Rule):
    """The training loss jumped far above its level over the previous steps. A single
    bad batch (repeated or corrupted data), an optimizer step that was too large, or a
    restart that lost the optimizer state all look like this. A spike the run recovers
    from costs the steps it took to recover; repeated spikes are often the first sign
    of an unstable run that will diverge."""

    code = "loss_spike"
    title = "Loss spike"
    severity = "warning"
    fix = (
        "Look at the batch at this step (a wall of one token, corrupted or duplicated "
        "data) and at the gradient norm just before it. If spikes repeat, lower the "
        "learning rate, lengthen warmup, tighten grad_clip, or lower Adam's beta2 (0.95). "
        "After a resume, check that the optimizer state was restored. To skip such "
        "batches automatically, set actions.skip_loss_spikes."
    )
    fix_external = (
        "Look at the batch at this step (a wall of one token, corrupted or duplicated "
        "data) and at the gradient norm just before it. If spikes repeat, lower the "
        "learning rate, lengthen warmup, tighten the gradient clip, or lower Adam's beta2 "
        "(0.95). After a restart from a checkpoint, check that the optimizer state was "
        "restored too."
    )
    thresholds = LossSpikeThresholds
    # A grad-norm spike at most this many steps before the loss spike is linked to it.
    links_to = ("grad_norm_spike", 5)

    def check(self, view: RunView, limits: LossSpikeThresholds) -> list[Observation]:
        return spike_observations(view, "train/loss", limits)
