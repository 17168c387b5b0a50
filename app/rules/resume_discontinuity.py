"""resume_discontinuity: the loss (or the gradient norm) jumps right after a resume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, SeriesView, Thresholds
from app.rules.stats import robust_level

_BLOCK = 4096  # points per block when scanning for the recovery


class ResumeDiscontinuityThresholds(Thresholds):
    # points before the resume that set the level it should continue from
    before: int = Field(default=20, ge=3)
    # points from the resume on whose mean is compared with it
    after: int = Field(default=5, ge=1)
    # the loss mean jumping by this fraction of the level fires ...
    jump: float = Field(default=0.2, gt=0)
    # ... and so does the pre-clip gradient norm's mean by this fraction (its noise is
    # several times the loss's: +80% happens without a resume)
    grad_norm_jump: float = Field(default=1.0, gt=0)
    # ... as does a jump of either by this many robust sigma of the level's window
    zscore: float = Field(default=6.0, gt=0)
    # sigma floor, as a fraction of the level: a very smooth series makes noise look huge
    sigma_floor: float = Field(default=0.01, ge=0)


@dataclass(frozen=True, slots=True)
class _Verdict:
    jumped: bool
    judged_at: int  # the step at which the `after` points were complete
    recovered_at: int | None  # first step whose trailing mean is back under the threshold
    evidence: dict[str, Any]


class ResumeDiscontinuity(Rule):
    """The loss, or the gradient norm, jumped right after the run resumed from a
    checkpoint, instead of continuing from where it left off. A correct resume restores
    the weights, the optimizer state and the data order, and the curves carry on as if
    nothing had happened. A jump usually means the optimizer state was not restored:
    Adam restarts with empty moment estimates, so its first updates move every weight by
    about the full learning rate, knocking the model off its valley (the gradient norm
    triples and the loss climbs). It can also mean the data loader or RNG state was not
    restored (the run replays data it has seen, or sees a different mixture)."""

    code = "resume_discontinuity"
    title = "Jump after resume"
    severity = "warning"
    fix = (
        "Save and load the optimizer state_dict with the model (and the GradScaler's, and "
        "the LR scheduler's), restore the data loader position and the RNG states, and "
        "resume from the same step. If the optimizer state is truly lost, re-warm the LR "
        "for a few hundred steps after the resume."
    )
    thresholds = ResumeDiscontinuityThresholds

    def check(self, view: RunView, limits: ResumeDiscontinuityThresholds) -> list[Observation]:
        markers = view.series("train/resumed")
        watched = [
            (key, jump, view.series(key))
            for key, jump in (
                ("train/loss", limits.jump),
                ("train/grad_norm", limits.grad_norm_jump),
            )
        ]
        watched = [item for item in watched if len(item[2])]
        if not len(markers) or not watched:
            return []
        observations: list[Observation] = []
        for resume_step in markers.steps[markers.values > 0.5].tolist():
            verdicts = [_judge(limits, key, jump, s, int(resume_step)) for key, jump, s in watched]
            ready = [verdict for verdict in verdicts if verdict is not None]
            if len(ready) < len(verdicts):
                continue  # judged once every watched series has its points after the resume
            observations += _observe(
                min(view.since_of(key) for key, _, _ in watched), int(resume_step), ready
            )
        return observations


def _observe(since: int, resume_step: int, verdicts: list[_Verdict]) -> list[Observation]:
    """One observation at the resume step when it is judged, and a clear one when every
    series that jumped is back to its level."""
    observations = []
    jumped = [verdict for verdict in verdicts if verdict.jumped]
    if max(verdict.judged_at for verdict in verdicts) > since:
        if not jumped:
            observations.append(Observation(resume_step, False))
        else:
            evidence: dict[str, Any] = {"resume_step": resume_step}
            evidence["keys"] = [verdict.evidence["key"] for verdict in jumped]
            for verdict in jumped:
                evidence[verdict.evidence["key"]] = verdict.evidence
            details = [
                f"{v.evidence['key']} averaged {v.evidence['mean_after']:.4g} over "
                f"{v.evidence['points_after']} steps, {100 * v.evidence['relative_jump']:.0f}% "
                f"({v.evidence['robust_sigmas']:.1f} robust sigma) above its median of "
                f"{v.evidence['level_before']:.4g} before it"
                for v in jumped
            ]
            detail = f"After the resume at step {resume_step}, " + "; ".join(details) + "."
            observations.append(Observation(resume_step, True, evidence=evidence, detail=detail))
    recoveries = [verdict.recovered_at for verdict in jumped]
    if jumped and None not in recoveries:
        step = max(step for step in recoveries if step is not None)
        if step > since:
            observations.append(Observation(step, False, evidence={"recovered_step": step}))
    return observations


def _judge(
    limits: ResumeDiscontinuityThresholds, key: str, jump: float, series: SeriesView, resume: int
) -> _Verdict | None:
    """Whether `series` jumped at the resume; None until `after` points follow it (or
    when too little history precedes it to know its level)."""
    split = series.index_of(resume)
    before = series.values[max(0, split - 4 * limits.before) : split]
    before = before[np.isfinite(before)][-limits.before :]
    if len(before) < limits.before // 2 or split + limits.after > len(series):
        return None
    level, spread = robust_level(before)
    sigma = max(spread, limits.sigma_floor * abs(level))
    threshold = min(level * (1 + jump), level + limits.zscore * sigma)
    judged_at = int(series.steps[split + limits.after - 1])
    mean = _mean(series.values[split : split + limits.after])
    if not mean > threshold or not level > 0:  # a level of 0 has no scale to jump from
        return _Verdict(False, judged_at, None, {})
    recovered = _first_recovery(series.values, split, limits.after, threshold)
    evidence = {
        "key": key,
        "mean_after": mean,
        "points_after": limits.after,
        "level_before": level,
        "points_before": len(before),
        "relative_jump": mean / level - 1,
        "robust_sigmas": (mean - level) / sigma,
        "jump_threshold": jump,
        "zscore_threshold": limits.zscore,
    }
    recovered_at = int(series.steps[recovered]) if recovered is not None else None
    return _Verdict(True, judged_at, recovered_at, evidence)


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _first_recovery(values: np.ndarray, start: int, after: int, threshold: float) -> int | None:
    """Index of the last point of the first `after`-point window from `start` on whose
    mean (of its finite values) is back at or below `threshold`. Scanned block by block:
    a recovery is usually near, and a long run must not be re-read on every call."""
    for block in range(start, len(values) - after + 1, _BLOCK):
        segment = values[block : block + _BLOCK + after - 1]
        finite = np.isfinite(segment)
        # Mean of each window's finite values; an all-NaN window is no recovery (NaN).
        windows = sliding_window_view(np.where(finite, segment, 0.0), after)
        counts = sliding_window_view(finite, after).sum(axis=1)
        with np.errstate(all="ignore"):
            means = np.where(counts > 0, windows.sum(axis=1) / counts, np.nan)
        hits = np.flatnonzero(means <= threshold)
        if len(hits):
            return block + int(hits[0]) + after - 1
    return None
