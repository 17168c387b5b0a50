"""dead_units: most of a layer's MLP units never activate."""

from __future__ import annotations

from app.rules.base import Observation, Rule, RunView, Thresholds
from app.rules.layers import over_limit


class DeadUnitsThresholds(Thresholds):
    # Fraction of a layer's MLP units that were not positive for any token of the
    # instrumented batch, above which the layer warns; healthy runs stay below ~10%.
    dead_fraction: float = 0.5
    # During the init transient (the first skip_points instrument points) only a
    # clearly broken layer counts.
    early_fraction: float = 0.9
    skip_points: int = 3


class DeadUnits(Rule):
    """More than half of a layer's MLP units were not positive for a single token of
    the instrumented batch. Such a unit outputs ~0 and passes ~no gradient, so it is
    unlikely to recover: the layer has lost that share of its capacity for good. Units
    die when large updates push their biases or input weights far negative, typically
    after a learning rate that is too high or a loss spike."""

    code = "dead_units"
    title = "Dead MLP units"
    severity = "warning"
    fix = (
        "Lower the learning rate or lengthen warmup, set grad_clip (1.0) if it is off, and "
        "restart from a checkpoint taken before the units died: dead units rarely come "
        "back. Check the init scale of the MLP input projection (std ~0.02)."
    )
    per_layer = True
    thresholds = DeadUnitsThresholds
    pending_for = 3  # three instrument points in a row
    keep_firing_for = 3

    def check(self, view: RunView, limits: DeadUnitsThresholds) -> list[Observation]:
        observations: list[Observation] = []
        points = over_limit(
            view, "frac_dead", limits.dead_fraction, limits.early_fraction, limits.skip_points
        )
        for layer, key, step, value, active in points:
            if not active:
                observations.append(Observation(step, False, subject=layer))
                continue
            observations.append(
                Observation(
                    step,
                    True,
                    subject=layer,
                    evidence={
                        "key": key,
                        "frac_dead": value,
                        "step": step,
                        "dead_fraction": limits.dead_fraction,
                    },
                    detail=(
                        f"{value:.1%} of {layer}'s units were dead at step {step} "
                        f"(warning above {limits.dead_fraction:.0%})."
                    ),
                )
            )
        return observations
