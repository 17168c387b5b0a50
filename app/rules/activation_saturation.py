"""activation_saturation: many MLP units sit in the flat or linear tail of their
activation function."""

from __future__ import annotations

from app.rules.base import Observation, Rule, RunView, Thresholds
from app.rules.layers import over_limit


class SaturationThresholds(Thresholds):
    # Fraction of a layer's pre-activations beyond the saturation point (|h| > 3 for
    # GELU) above which the layer warns; healthy runs stay below 1%.
    warning_fraction: float = 0.05
    # Above this fraction the finding is critical: most units have stopped learning.
    critical_fraction: float = 0.5
    # Instrument points at the start of training judged against critical_fraction only
    # (the init transient).
    skip_points: int = 3


class ActivationSaturation(Rule):
    """A large share of a layer's MLP pre-activations sits beyond the curved part of the
    activation function (|h| > 3 for GELU): below it the unit outputs ~0 with ~no
    gradient, above it the unit is just the identity. Saturated units pass little or no
    gradient, so the layer learns slowly or stops learning, and the nonlinearity the
    layer exists for is gone. It usually means the pre-activations have grown too large:
    a learning rate that is too high, or weights whose scale is drifting up."""

    code = "activation_saturation"
    title = "Saturated activations"
    severity = "warning"
    fix = (
        "Lower the learning rate (or lengthen warmup) and check the init scale of the layer's "
        "input projection (std ~0.02 for GPT-2-style models). Keep weight decay on, make "
        "sure the block's LayerNorm is applied before the MLP, and set grad_clip (1.0) if "
        "it is off."
    )
    per_layer = True
    thresholds = SaturationThresholds
    pending_for = 3  # three instrument points in a row
    keep_firing_for = 3

    def check(self, view: RunView, limits: SaturationThresholds) -> list[Observation]:
        observations: list[Observation] = []
        points = over_limit(
            view,
            "frac_saturated",
            limits.warning_fraction,
            limits.critical_fraction,
            limits.skip_points,
        )
        for layer, key, step, value, active in points:
            if not active:
                observations.append(Observation(step, False, subject=layer))
                continue
            critical = value > limits.critical_fraction
            observations.append(
                Observation(
                    step,
                    True,
                    subject=layer,
                    severity="critical" if critical else "warning",
                    evidence={
                        "key": key,
                        "frac_saturated": value,
                        "step": step,
                        "warning_fraction": limits.warning_fraction,
                        "critical_fraction": limits.critical_fraction,
                    },
                    detail=(
                        f"{value:.1%} of {layer}'s pre-activations were saturated at step "
                        f"{step} (warning above {limits.warning_fraction:.0%}, critical above "
                        f"{limits.critical_fraction:.0%})."
                    ),
                )
            )
        return observations
