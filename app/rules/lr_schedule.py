"""lr_schedule: the logged learning rate does not follow a sound schedule."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, Thresholds

# Config fields with which a run asks for per-group learning rates on purpose.
GROUP_LR_FIELDS = ("param_groups", "lr_groups", "layer_lr_decay")


class LrScheduleThresholds(Thresholds):
    # an LR at or above this fraction of the config's lr counts as "at the peak"
    peak_fraction: float = Field(default=0.95, gt=0, le=1)
    # without warmup: the steps in which a climb of the loss back above its start counts
    early_steps: int = Field(default=30, ge=2)
    # ... and how far below, then above, the first loss it must go
    early_rise: float = Field(default=0.02, ge=0)
    # param groups whose LRs differ by more than this relative spread are "different"
    group_spread: float = Field(default=0.01, ge=0)
    # the last fraction of max_steps in which a cosine schedule must have decayed ...
    tail_fraction: float = Field(default=0.1, gt=0, lt=1)
    # ... judged earlier, from where the configured cosine is down to this share of lr
    decayed_share: float = Field(default=0.8, gt=0, lt=1)


class LrSchedule(Rule):
    """The learning rate the run actually used does not match a sound schedule: it
    starts at its peak (no warmup, or a warmup that was configured but not applied),
    parameter groups run at different rates nobody asked for, or a cosine schedule is
    still at its peak long after it should have decayed. Adam's first steps are unstable
    at the full rate because its second-moment estimates are still poor, and a run that
    never decays its rate leaves loss on the table at the end."""

    code = "lr_schedule"
    title = "Learning-rate schedule not applied"
    severity = "warning"
    fix = (
        "Make the optimizer's LR follow the schedule every step (set it on every param "
        "group from the step number, also after a resume). Use a linear warmup (a few "
        "hundred steps at scale; warmup_steps) before the peak, and check that a cosine "
        "schedule decays to min_lr by max_steps."
    )
    thresholds = LrScheduleThresholds

    def check(self, view: RunView, limits: LrScheduleThresholds) -> list[Observation]:
        lr = view.series("train/lr")
        peak = view.config_number("lr")
        observations: list[Observation] = []
        if len(lr) and peak is not None and peak > 0:
            observations += _warmup(view, limits, peak)
            observations += _decay(view, limits, peak)
        return observations + _groups(view, limits)


def _warmup(view: RunView, limits: LrScheduleThresholds, peak: float) -> list[Observation]:
    warmup = view.config_number("warmup_steps")
    lr = view.series("train/lr")
    first_step, first_lr = int(lr.steps[0]), float(lr.values[0])
    if warmup is None or not first_lr >= limits.peak_fraction * peak:
        return []
    evidence: dict[str, Any] = {
        "first_step": first_step,
        "first_lr": first_lr,
        "lr": peak,
        "peak_fraction": limits.peak_fraction,
    }
    if warmup >= 2 and first_step < warmup and first_step > view.since_of("train/lr"):
        evidence.update(warmup_steps=int(warmup), expected_first_lr=peak / warmup)
        detail = (
            f"warmup_steps is {int(warmup)} but train/lr was already {first_lr:.3g} at step "
            f"{first_step}, the peak ({peak:.3g}); warmup would start near {peak / warmup:.3g}."
        )
        return [Observation(first_step, True, subject="warmup", evidence=evidence, detail=detail)]
    if warmup != 0:
        return []
    # No warmup configured: a finding once the loss shows what it costs, a first drop
    # followed by a climb back above the start (an LR too high outright raises it at once).
    loss = view.series("train/loss").upto(first_step + limits.early_steps)
    values = loss.values
    if len(values) < 3 or not np.isfinite(values[0]):
        return []
    dipped = np.fmin.accumulate(values) < values[0] * (1 - limits.early_rise)
    climbed = (values > values[0] * (1 + limits.early_rise)) & dipped
    hits = np.flatnonzero(climbed)
    if not len(hits) or int(loss.steps[hits[0]]) <= view.since_of("train/loss"):
        return []
    j, low = int(hits[0]), float(np.nanmin(values[: hits[0]]))
    step = int(loss.steps[j])
    evidence.update(
        warmup_steps=0,
        first_loss=float(values[0]),
        lowest_loss=low,
        loss=float(values[j]),
        early_steps=limits.early_steps,
        early_rise=limits.early_rise,
    )
    detail = (
        f"No warmup: the run started at its peak LR ({first_lr:.3g}) and the loss, after "
        f"falling to {low:.4g}, climbed back to {values[j]:.4g} at step {step}, above its "
        f"start ({values[0]:.4g})."
    )
    return [Observation(step, True, subject="warmup", evidence=evidence, detail=detail)]


def _decay(view: RunView, limits: LrScheduleThresholds, peak: float) -> list[Observation]:
    max_steps = view.config_number("max_steps")
    min_lr = view.config_number("min_lr")
    if view.config.get("schedule") != "cosine" or max_steps is None:
        return []
    if min_lr is not None and min_lr >= limits.peak_fraction * peak:
        return []  # a cosine from lr to about lr is a constant: nothing to see
    judge_from = _decayed_step(view, limits, peak, max_steps)
    new = view.series("train/lr").after(max(view.since_of("train/lr"), judge_from - 1))
    observations = []
    for step, value in zip(new.steps.tolist(), new.values.tolist(), strict=True):
        if not value >= limits.peak_fraction * peak:
            observations.append(Observation(step, False, subject="decay"))
            continue
        evidence = {
            "lr": value,
            "peak_lr": peak,
            "max_steps": int(max_steps),
            "step": step,
            "peak_fraction": limits.peak_fraction,
            "judged_from_step": judge_from,
        }
        detail = (
            f"schedule is cosine but train/lr was {value:.3g} at step {step} of "
            f"{int(max_steps)}, still at its peak ({peak:.3g}) where the schedule has it "
            f"decayed: the decay is not applied."
        )
        observations.append(Observation(step, True, "decay", evidence=evidence, detail=detail))
    return observations


def _decayed_step(
    view: RunView, limits: LrScheduleThresholds, peak: float, max_steps: float
) -> int:
    """The first step at which the configured cosine (after warmup_steps, down to min_lr;
    0 where absent) is at or below decayed_share of the peak, and at the latest the
    start of the last tail_fraction of max_steps."""
    tail_start = int(np.ceil(max_steps * (1 - limits.tail_fraction)))
    warmup = view.config_number("warmup_steps") or 0.0
    floor = view.config_number("min_lr") or 0.0
    # lr(p) = floor + (peak - floor) * (1 + cos(pi * p)) / 2, p the progress after warmup
    cosine = 2 * (limits.decayed_share * peak - floor) / (peak - floor) - 1
    if not -1 <= cosine <= 1:
        return tail_start  # this cosine never gets that low
    progress = float(np.arccos(cosine) / np.pi)
    return min(tail_start, int(np.ceil(warmup + progress * (max_steps - warmup))))


def _groups(view: RunView, limits: LrScheduleThresholds) -> list[Observation]:
    keys = view.keys("train/lr/group*")
    if len(keys) < 2 or any(view.config.get(name) for name in GROUP_LR_FIELDS):
        return []
    by_step: dict[int, list[float]] = {}
    for key in keys:
        new = view.new(key)
        for step, value in zip(new.steps.tolist(), new.values.tolist(), strict=True):
            by_step.setdefault(step, []).append(value)
    observations = []
    for step, values in sorted(by_step.items()):
        low, high = min(values), max(values)
        if len(values) < 2 or not high > low * (1 + limits.group_spread):
            observations.append(Observation(step, False, subject="groups"))
            continue
        evidence = {
            "min_lr": low,
            "max_lr": high,
            "groups": len(values),
            "step": step,
            "group_spread": limits.group_spread,
        }
        detail = (
            f"At step {step} the {len(values)} param groups ran at learning rates from "
            f"{low:.3g} to {high:.3g}, and the config does not ask for per-group rates."
        )
        observations.append(Observation(step, True, "groups", evidence=evidence, detail=detail))
    return observations
