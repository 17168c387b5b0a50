"""nonfinite: the loss or the gradient norm is NaN or infinite."""

from __future__ import annotations

import numpy as np

from app.rules.base import Observation, Rule, RunView, Thresholds

WATCHED = ("train/loss", "train/grad_norm")


class NonFinite(Rule):
    """The loss or the pre-clip gradient norm became NaN or infinite. Once a NaN reaches
    the weights through an optimizer step, every later step is NaN too: the run is lost
    from here, and its last good checkpoint is the one before this step."""

    code = "nonfinite"
    title = "Non-finite loss or gradient"
    severity = "critical"
    fix = (
        "Resume from the last checkpoint before this step with a lower learning rate or a "
        "tighter grad_clip. Look for log/sqrt/division of values that can reach 0, an "
        "fp16 run without loss scaling (use bf16 or a GradScaler), and bad samples in the "
        "batch at this step. The default action stops a launched run here."
    )
    fix_external = (
        "Restart from your last checkpoint before this step with a lower learning rate or "
        "a tighter gradient clip. Look for log/sqrt/division of values that can reach 0, "
        "an fp16 run without loss scaling (use bf16 or a GradScaler), and bad samples in "
        "the batch at this step."
    )
    explanation_external = (
        "The loss or the pre-clip gradient norm became NaN or infinite. Once a NaN reaches "
        "the weights through an optimizer step, every later step is NaN too, and the run "
        "is lost from here; if later steps are finite again, it was a one-off."
    )
    recovered_explanation = (
        "A one-off: the loss or gradient norm was non-finite here, and the steps after it "
        "are finite again, so the NaN did not reach the weights (the step was skipped, as "
        "a GradScaler or a NaN guard does, or only the logged value overflowed). The run "
        "is not lost; watch for it recurring, which points at a real instability."
    )
    thresholds = Thresholds
    keep_firing_for = 3  # a run that recovers (a skipped step) resolves after 3 clean steps

    def check(self, view: RunView, limits: Thresholds) -> list[Observation]:
        observations: list[Observation] = []
        for key in WATCHED:
            new = view.new(key)
            bad = ~np.isfinite(new.values)
            for step, value, is_bad in zip(new.steps, new.values, bad, strict=True):
                if is_bad:
                    observations.append(
                        Observation(
                            int(step),
                            True,
                            evidence={"key": key, "value": str(float(value)), "step": int(step)},
                            detail=f"{key} was {float(value)} at step {int(step)}.",
                        )
                    )
                else:
                    observations.append(Observation(int(step), False))
        return _one_per_step(observations)


def _one_per_step(observations: list[Observation]) -> list[Observation]:
    """Loss and grad norm share steps: a step is bad if either key is."""
    by_step: dict[int, Observation] = {}
    for observation in observations:
        kept = by_step.get(observation.step)
        if kept is None or (observation.active and not kept.active):
            by_step[observation.step] = observation
    return list(by_step.values())
