"""activation_scale: a layer's activations collapse toward zero or blow up, over
training or with depth."""

from __future__ import annotations

import numpy as np

from app.rules.base import Observation, Rule, RunView, SeriesView, Thresholds
from app.rules.layers import layer_keys, new_positions


class ScaleThresholds(Thresholds):
    # A layer's activation std below this is collapsed, whatever its history.
    min_std: float = 1e-3
    # Collapsed: the std fell below this fraction of the layer's first logged std (its
    # scale at initialisation, or when logging began).
    collapse_ratio: float = 0.01
    # Blown up: the std grew above this multiple of its first logged std. The residual
    # stream of a healthy GPT grows ~50x from its init scale (0.02-std embeddings) and
    # MLP pre-activations ~4x; a diverging run grows 10^4-10^5x.
    growth_ratio: float = 1000.0
    # Residual stream std after the last block over that after the first block, at the
    # same step. Healthy pre-norm GPTs stay within ~2x once past the init transient.
    depth_ratio: float = 10.0
    # The first instrument points (the init transient) are not judged.
    skip_points: int = 3


class ActivationScale(Rule):
    """A layer's activation standard deviation has left the range it can work in. When
    it collapses toward zero the layer passes almost no signal forward and almost no
    gradient back. When it grows by orders of magnitude over training, or the residual
    stream grows sharply from the first block to the last, later layers see inputs far
    from their init scale, LayerNorm and softmax saturate, and low-precision formats
    overflow: a run heading for divergence or NaNs usually shows it here first."""

    code = "activation_scale"
    title = "Activation scale collapsing or exploding"
    severity = "warning"
    fix = (
        "For growth: lower the learning rate, keep grad_clip on (1.0), keep weight decay, "
        "and scale residual output projections by 1/sqrt(2 * n_layer) at init (GPT-2); a "
        "pre-norm block (LayerNorm before attention and MLP) keeps depth growth in check. "
        "For collapse: check the init std (~0.02) and that no layer's weights were zeroed "
        "or decayed away (weight decay too high for the learning rate)."
    )
    per_layer = True
    thresholds = ScaleThresholds
    pending_for = 3  # three instrument points in a row
    keep_firing_for = 3

    def check(self, view: RunView, limits: ScaleThresholds) -> list[Observation]:
        layers = layer_keys(view, "act", "std")
        observations: list[Observation] = []
        for layer, key in layers.items():
            observations.extend(self._over_training(view, layer, key, limits))
        resid = [layer for layer in layers if layer.endswith(".resid")]
        if len(resid) >= 2:
            first, last = (view.series(layers[layer]) for layer in (resid[0], resid[-1]))
            observations.extend(self._over_depth(view, resid[0], resid[-1], first, last, limits))
        return observations

    def _over_training(
        self, view: RunView, layer: str, key: str, limits: ScaleThresholds
    ) -> list[Observation]:
        points = view.series(key)
        if not len(points) or not np.isfinite(points.values[0]) or points.values[0] <= 0:
            return []
        reference, reference_step = float(points.values[0]), int(points.steps[0])
        observations: list[Observation] = []
        for position in new_positions(points, view.since_of(key), first=limits.skip_points):
            std, step = float(points.values[position]), int(points.steps[position])
            if not np.isfinite(std):
                continue  # a NaN is nonfinite's finding, not this one
            ratio = std / reference
            collapsed = std < limits.min_std or ratio < limits.collapse_ratio
            if not collapsed and ratio <= limits.growth_ratio:
                observations.append(Observation(step, False, subject=layer))
                continue
            change = "collapsed to" if collapsed else "grew to"
            bounds = (
                f"warning below {limits.min_std:g} or {limits.collapse_ratio:g}x"
                if collapsed
                else f"warning above {limits.growth_ratio:g}x"
            )
            observations.append(
                Observation(
                    step,
                    True,
                    subject=layer,
                    evidence={
                        "key": key,
                        "std": std,
                        "step": step,
                        "reference_std": reference,
                        "reference_step": reference_step,
                        "ratio": ratio,
                        "min_std": limits.min_std,
                        "collapse_ratio": limits.collapse_ratio,
                        "growth_ratio": limits.growth_ratio,
                    },
                    detail=(
                        f"{key} {change} {std:.3g} at step {step}, {ratio:.3g}x its "
                        f"{reference:.3g} at step {reference_step} ({bounds})."
                    ),
                )
            )
        return observations

    def _over_depth(
        self,
        view: RunView,
        first_layer: str,
        last_layer: str,
        first: SeriesView,
        last: SeriesView,
        limits: ScaleThresholds,
    ) -> list[Observation]:
        subject = f"{first_layer}..{last_layer}"
        observations: list[Observation] = []
        for position in new_positions(last, view.since, first=limits.skip_points):
            step = int(last.steps[position])
            at = first.index_of(step)
            if at >= len(first) or int(first.steps[at]) != step:
                continue  # logged at different steps: nothing to compare
            first_std, last_std = float(first.values[at]), float(last.values[position])
            if not (np.isfinite(first_std) and np.isfinite(last_std)) or first_std <= 0:
                continue
            ratio = last_std / first_std
            if ratio <= limits.depth_ratio:
                observations.append(Observation(step, False, subject=subject))
                continue
            observations.append(
                Observation(
                    step,
                    True,
                    subject=subject,
                    evidence={
                        "first_layer": first_layer,
                        "last_layer": last_layer,
                        "first_std": first_std,
                        "last_std": last_std,
                        "step": step,
                        "ratio": ratio,
                        "depth_ratio": limits.depth_ratio,
                    },
                    detail=(
                        f"The residual stream's std grew {ratio:.3g}x from {first_layer} "
                        f"({first_std:.3g}) to {last_layer} ({last_std:.3g}) at step {step} "
                        f"(warning above {limits.depth_ratio:g}x)."
                    ),
                )
            )
        return observations
