"""plateau: the loss has not fallen from where it started over the first stretch of training."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, SeriesView, Thresholds

KEY = "train/loss"
_FIRST_BLOCK = 1024  # the search for the escape reads on from the stretch, doubling


class PlateauThresholds(Thresholds):
    # the loss must have fallen by this fraction of its starting level ...
    min_drop: float = Field(default=0.05, gt=0, lt=1)
    # ... within the first min(max_stretch, stretch_fraction * max_steps) steps
    max_stretch: int = Field(default=500, ge=1)
    stretch_fraction: float = Field(default=0.25, gt=0, le=1)
    # never judged earlier than this many steps in, however short the run
    min_stretch: int = Field(default=50, ge=1)
    # levels are medians of this many points (the first ones, the ones ending the stretch)
    smooth: int = Field(default=10, ge=1)
    # the finding resolves once the loss is this fraction below its start (hysteresis:
    # twice min_drop, so a loss hovering at the threshold does not flap)
    resolve_drop: float = Field(default=0.1, gt=0, lt=1)
    # median pre-clip grad norm below this: gradients are not flowing
    tiny_grad_norm: float = Field(default=1e-3, gt=0)
    # learning rate below this, with normal gradients: the learning rate is too low
    low_lr: float = Field(default=1e-5, gt=0)


class Plateau(Rule):
    """The training loss has barely moved from its starting value after the first
    stretch of training. Either the updates are too small to matter (a learning rate far
    too low) or the gradients do not reach the weights (a detached graph, frozen or dead
    layers, vanishing gradients). Training longer will not help: the run is burning
    compute without learning. The finding resolves once the loss clearly falls."""

    code = "plateau"
    title = "Loss plateau from the start"
    severity = "warning"
    fix = (
        "Read the cause in the details. Gradients not flowing (tiny grad norm): check that "
        "the loss is computed from the model's output without .detach() or torch.no_grad(), "
        "that parameters have requires_grad and are in the optimizer, and look for dead "
        "activations or saturated layers. Learning rate too low: raise it (3e-4 to 3e-3 is "
        "typical for AdamW on small GPTs) and check the warmup and schedule. Otherwise "
        "check that the targets match the inputs (shifted by one token)."
    )
    thresholds = PlateauThresholds

    def check(self, view: RunView, limits: PlateauThresholds) -> list[Observation]:
        loss = view.series(KEY)
        first_new, k = view.first_new(KEY), limits.smooth
        head = loss.values[: 4 * k]
        head = head[np.isfinite(head)][:k]
        if first_new >= len(loss) or len(head) < k or float(np.median(head)) <= 0:
            return []
        start_level = float(np.median(head))
        first_step, stretch = int(loss.steps[0]), _stretch(view, limits)
        # Judged once, at the end of the stretch; it holds until the loss escapes.
        end = loss.index_of(first_step + stretch)
        if end >= len(loss):
            return []
        recent = loss.values[max(0, end - k + 1) : end + 1]
        recent = recent[np.isfinite(recent)]
        if not len(recent):
            return []
        level = float(np.median(recent))
        drop = (start_level - level) / start_level
        if drop >= limits.min_drop:
            return []  # it learned: nothing to say, ever
        escape = _escape(loss.values, end, (1 - limits.resolve_drop) * start_level, k)
        stop = len(loss) if escape is None else escape + 1
        observations = []
        for index in range(max(first_new, end), stop):
            step = int(loss.steps[index])
            if index == escape:  # resolved for good: a later plateau is not one from the start
                escaped = loss.values[max(0, index - k + 1) : index + 1]
                evidence = {"escaped_level": float(np.median(escaped[np.isfinite(escaped)]))}
                observations.append(Observation(step, False, evidence=evidence))
            elif index > end and np.isfinite(loss.values[index]):
                observations.append(Observation(step, True))
            elif index == end:
                observations.append(_onset(view, step, start_level, level, stretch, limits))
        return observations


def _onset(
    view: RunView,
    step: int,
    start_level: float,
    level: float,
    stretch: int,
    limits: PlateauThresholds,
) -> Observation:
    drop = (start_level - level) / start_level
    first_step = int(view.series(KEY).steps[0])
    cause, grad_norm, lr = _cause(view, step, limits)
    evidence = {
        "start_level": start_level,
        "level": level,
        "drop": round(drop, 4),
        "min_drop": limits.min_drop,
        "stretch_steps": stretch,
        "grad_norm_median": grad_norm,
        "lr": lr,
        "cause": cause,
    }
    detail = (
        f"train/loss is {level:.4g} at step {step}, {100 * drop:.1f}% below its start "
        f"({start_level:.4g}) after {step - first_step} steps (at least "
        f"{100 * limits.min_drop:g}% expected); likely cause: {cause}."
    )
    return Observation(step, True, evidence=evidence, detail=detail)


def _stretch(view: RunView, limits: PlateauThresholds) -> int:
    max_steps = view.config_number("max_steps")
    stretch = limits.max_stretch
    if max_steps is not None and max_steps > 0:
        stretch = min(stretch, int(limits.stretch_fraction * max_steps))
    return max(stretch, limits.min_stretch)


def _escape(values: np.ndarray, start: int, threshold: float, k: int) -> int | None:
    """The first index from `start` where most of the k points ending there (their
    median) are below `threshold`; read in doubling blocks, so a run that escapes early
    is found early and one that never does costs one cheap pass."""
    size = _FIRST_BLOCK
    while start < len(values):
        stop = min(len(values), start + size)
        lo = max(0, start - k + 1)
        below = np.concatenate([[0], np.cumsum(values[lo:stop] < threshold)])
        ends = np.arange(start, stop)  # the k points ending at e: values[e - k + 1 .. e]
        counts = below[ends - lo + 1] - below[np.maximum(ends - k + 1 - lo, 0)]
        hits = np.flatnonzero(2 * counts > k)
        if len(hits):
            return int(ends[hits[0]])
        start, size = stop, size * 2
    return None


def _cause(
    view: RunView, step: int, limits: PlateauThresholds
) -> tuple[str, float | None, float | None]:
    """What the grad norm and the learning rate say about why the loss does not move."""
    grad = _recent(view.series("train/grad_norm"), step, 50)
    grad_norm = float(np.median(grad)) if len(grad) else None
    lr_points = _recent(view.series("train/lr"), step, 1)
    lr = float(lr_points[-1]) if len(lr_points) else view.config_number("lr")
    if grad_norm is not None and grad_norm < limits.tiny_grad_norm:
        return "gradients not flowing (tiny gradient norm)", grad_norm, lr
    if lr is not None and lr < limits.low_lr:
        return "learning rate too low (normal gradients, tiny learning rate)", grad_norm, lr
    return "unclear (gradients and learning rate look normal)", grad_norm, lr


def _recent(series: SeriesView, step: int, points: int) -> np.ndarray:
    values = series.upto(step).values[-points:]
    return values[np.isfinite(values)]
