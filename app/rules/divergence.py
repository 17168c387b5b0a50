"""divergence: the loss rises and stays up: far above its recent mean, or back above
where it started after having fallen."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, SeriesView, Thresholds

KEY = "train/loss"
_BLOCK = 8192  # points per vectorised block of window sums
_FIRST_BLOCK = 1024  # the search for the first fallen point reads from the start, doubling


class DivergenceThresholds(Thresholds):
    # the loss must hold above the reference for this many consecutive steps (one spike
    # is loss_spike's, not a divergence)
    consecutive: int = Field(default=5, ge=1)
    # loss at or above this multiple of its recent mean, on every one of those steps
    ratio: float = Field(default=2.0, gt=1)
    # points before the run of consecutive steps whose mean is the recent level
    window: int = Field(default=50, ge=1)
    # finite points that window must hold (one: a loss that doubles right after step 0
    # and stays there has diverged)
    min_history: int = Field(default=1, ge=1)
    # the loss has "fallen" once it went below this fraction of its first value
    fall_fraction: float = Field(default=0.9, gt=0, lt=1)


@dataclass(frozen=True, slots=True)
class _Verdicts:
    by_mean: np.ndarray  # the last `consecutive` steps all >= ratio x the mean before them
    by_rise: np.ndarray  # ... all >= the first loss, which had fallen before them
    recent_mean: np.ndarray


class Divergence(Rule):
    """The training loss is going the wrong way and staying there: it has held at twice
    its recent level or more for several steps, or it has climbed back above its
    starting value after having learned something. The optimizer is making the model
    worse; a diverged run rarely comes back by itself, and every further step wastes
    compute. The finding resolves once the loss is back down to its level before the
    rise."""

    code = "divergence"
    title = "Training diverged"
    severity = "critical"
    fix = (
        "Stop the run and restart from the last checkpoint before the rise with a lower "
        "learning rate (try half), a longer warmup, and gradient clipping (grad_clip 1.0). "
        "Check the loss-spike and gradient-norm findings just before it for the trigger; "
        "in mixed precision, prefer bf16 or use a GradScaler."
    )
    thresholds = DivergenceThresholds

    def check(self, view: RunView, limits: DivergenceThresholds) -> list[Observation]:
        loss = view.series(KEY)
        first_new = view.first_new(KEY)
        if first_new >= len(loss):
            return []
        # The episode of a new point began at most `window` points back; its end level
        # looks `window` further back, and each verdict reads a run and a window more.
        window = limits.window
        chain_start = max(0, first_new - window)
        level_start = max(0, chain_start - window)
        verdicts = _verdicts(loss, level_start, limits)
        # The episode lasts until the loss is back down to the recent mean before the
        # rise: the lowest recent mean of the last `window` points.
        padded = np.concatenate([np.full(window, np.nan), verdicts.recent_mean])
        chain_offset = chain_start - level_start
        back_level = np.fmin.reduce(sliding_window_view(padded, window + 1), axis=1)
        values = loss.values[chain_start:]
        finite = np.isfinite(values)
        onset = (verdicts.by_mean | verdicts.by_rise)[chain_offset:]
        with np.errstate(invalid="ignore"):
            elevated = finite & ((values > back_level[chain_offset:]) | onset)
        index = np.arange(len(values))
        last_onset = np.maximum.accumulate(np.where(onset, index, -1))
        last_break = np.maximum.accumulate(np.where(finite & ~elevated, index, -1))
        active = elevated & (last_onset > last_break) & (index - last_onset <= window)
        observations = []
        for j in range(first_new - chain_start, len(values)):
            if not finite[j]:
                continue  # nonfinite's business
            step, value = int(loss.steps[chain_start + j]), float(values[j])
            if not active[j]:
                observations.append(Observation(step, False))
            elif onset[j] and not (j > 0 and active[j - 1]):
                k = j + chain_offset
                mean = float(verdicts.recent_mean[k])
                observations.append(
                    _onset(loss, step, value, mean, bool(verdicts.by_mean[k]), limits)
                )
            else:
                observations.append(Observation(step, True, evidence={"key": KEY}))
        return observations


def _verdicts(loss: SeriesView, start: int, limits: DivergenceThresholds) -> _Verdicts:
    """The onset tests for loss.values[start:]."""
    window, run = limits.window, limits.consecutive
    tail_start = max(0, start - run + 1 - window)
    values = loss.values[tail_start:]
    clean = np.where(np.isfinite(values), values, np.nan)
    judged = np.arange(start - tail_start, len(values))
    run_start = judged - run + 1  # the run of point j is values[j - run + 1 .. j]
    padded = np.concatenate([np.full(run - 1, np.nan), clean])
    run_min = sliding_window_view(padded, run).min(axis=1)[judged]  # NaN if any is NaN
    ref_sum, ref_count = _reference_sums(clean, int(judged[0]), window, run)
    with np.errstate(all="ignore"):
        ref_mean = ref_sum / ref_count
        recent_mean = np.where(ref_count >= limits.min_history, ref_mean, np.nan)
        by_mean = (run_start >= 0) & (recent_mean > 0) & (run_min >= limits.ratio * recent_mean)
        above_initial = (run_start >= 0) & (run_min >= loss.values[0])
    by_rise = np.zeros(len(judged), dtype=bool)
    initial = float(loss.values[0])
    if np.isfinite(initial) and initial > 0 and np.any(above_initial):
        fallen_at = _first_below(loss.values, limits.fall_fraction * initial, len(loss))
        if fallen_at is not None:
            by_rise = above_initial & (fallen_at - tail_start < run_start)
    return _Verdicts(by_mean, by_rise, recent_mean)


def _reference_sums(
    clean: np.ndarray, start: int, window: int, run: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of the finite values among the `window` points before the run of each
    point from `start`, row by row (a point's sum does not depend on where this call's
    slice began), in blocks (memory stays at window x block)."""
    padded = np.concatenate([np.full(window + run - 1, np.nan), clean])
    rows = sliding_window_view(padded, window)
    sums, counts = [], []
    for block in range(start, len(clean), _BLOCK):
        chunk = rows[block : min(block + _BLOCK, len(clean))]
        sums.append(np.nansum(chunk, axis=1))
        counts.append(np.sum(np.isfinite(chunk), axis=1))
    return np.concatenate(sums), np.concatenate(counts)


def _onset(
    loss: SeriesView,
    step: int,
    value: float,
    mean: float,
    by_mean: bool,
    limits: DivergenceThresholds,
) -> Observation:
    run, initial = limits.consecutive, float(loss.values[0])
    evidence: dict[str, float | str] = {"step": step, "value": value, "initial": initial}
    evidence["recent_mean"] = mean
    evidence |= {"ratio_threshold": limits.ratio, "consecutive": run, "window": limits.window}
    if by_mean:
        evidence["condition"] = "above_recent_mean"
        detail = (
            f"train/loss has stayed at or above {limits.ratio:g}x its recent mean "
            f"({mean:.4g}) for {run} steps, reaching {value:.4g} at step {step}."
        )
    else:
        fallen_at = _first_below(loss.values, limits.fall_fraction * initial, len(loss))
        fallen_step = int(loss.steps[fallen_at or 0])
        evidence |= {"condition": "back_above_initial", "fallen_step": fallen_step}
        detail = (
            f"train/loss has been back above its first value ({initial:.4g}) for {run} "
            f"steps, {value:.4g} at step {step}, after falling below "
            f"{limits.fall_fraction:g}x of it by step {fallen_step}."
        )
    return Observation(step, True, evidence=evidence, detail=detail)


def _first_below(values: np.ndarray, threshold: float, end: int) -> int | None:
    """Index of the first value below `threshold`, reading from the start in doubling
    blocks: a run that learns at all falls early, so this rarely reads far."""
    start, size = 0, _FIRST_BLOCK
    while start < end:
        stop = min(end, start + size)
        hits = np.flatnonzero(values[start:stop] < threshold)
        if len(hits):
            return start + int(hits[0])
        start, size = stop, size * 2
    return None
