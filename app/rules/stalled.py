"""stalled: a running run has written no new step for far longer than its steps take."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, Thresholds

# Series whose point times give the run's pace, in order of preference.
PACE_KEYS = ("train/loss", "perf/tokens_per_sec")


class StalledThresholds(Thresholds):
    # The floor: seconds without a new step before a running run counts as stalled ...
    timeout_seconds: float = Field(default=60.0, gt=0)
    # ... or this many median intervals between recent points, whichever is longer, so
    # a model whose steps take a minute each is not called stalled after a few ...
    interval_multiple: float = Field(default=20.0, gt=0)
    # ... or this multiple of the longest pause among the recent points (an evaluation,
    # a checkpoint save), so a run's own routine pauses are never a stall
    gap_multiple: float = Field(default=2.0, gt=0)
    # recent points whose intervals give the median
    window: int = Field(default=50, ge=2)
    # points whose longest pause counts
    gap_window: int = Field(default=500, ge=2)


class Stalled(Rule):
    """The run is marked running, and its process is still alive (its heartbeats go on),
    but it has written no new step for much longer than its steps normally take. The
    process may be hung (a deadlock in a collective under DDP, a data loader worker
    that died, a full disk). A hung run holds its device while producing nothing. Time
    the run spent stopped or queued does not count: the silence is measured from its
    latest write or from when it last started running, whichever is later."""

    code = "stalled"
    title = "Run stalled: no new steps"
    severity = "critical"
    fix = (
        "Look at the worker's and the trainer's logs and at the process (py-spy dump shows "
        "where it waits). Under DDP a rank that crashed leaves the others waiting in a "
        "collective: set a NCCL timeout. Stop the run and resume it from its last "
        "checkpoint."
    )
    explanation_external = (
        "The script is still alive (it keeps sending heartbeats, or the run was never "
        "finished) but has logged no new step for much longer than its steps normally "
        "take. It may be hung: a deadlock in a collective under DDP, a data loader worker "
        "that died, a full disk, or a step waiting on input."
    )
    fix_external = (
        "Look at the script's output and at the process (py-spy dump PID shows where it "
        "waits). Under DDP a rank that crashed leaves the others waiting in a collective: "
        "set a NCCL timeout. If it is hung, stop it and restart from your last checkpoint."
    )
    thresholds = StalledThresholds
    time_based = True

    def check(self, view: RunView, limits: StalledThresholds) -> list[Observation]:
        last_write = view.last_write_time
        if last_write is None:
            # An offline replay: the time of the latest point stands in for the write.
            times = [view.series(key).times[-1:] for key in PACE_KEYS]
            last_write = max((float(t[0]) for t in times if len(t)), default=None)
        if last_write is None:
            return []  # no clock to judge by
        if view.status != "running":
            # A run that is not running is not expected to write; this resolves a stall.
            return [Observation(view.last_step, False)]
        since = max(last_write, view.status_since or last_write)
        silent_for = view.now - since
        interval, gap = _pace(view, limits.window, limits.gap_window)
        threshold = limits.timeout_seconds
        if interval is not None:
            threshold = max(threshold, limits.interval_multiple * interval)
        if gap is not None:
            threshold = max(threshold, limits.gap_multiple * gap)
        if not silent_for > threshold:
            return [Observation(view.last_step, False)]
        heartbeat = view.heartbeat_time
        if heartbeat is not None and heartbeat - since <= threshold:
            # No sign of life since the silence passed the threshold. A process that
            # died right after a write looks the same as a hung one until then; the
            # heartbeat watchdog marks a dead one crashed when its heartbeats stay away,
            # so a stall needs a heartbeat (or a worker's) that proves the process alive.
            return [Observation(view.last_step, False, evidence={"awaiting_heartbeat": True})]
        evidence = {
            "last_step": view.last_step,
            "seconds_without_write": round(silent_for, 1),
            "threshold_seconds": round(threshold, 1),
            "median_interval_seconds": round(interval, 3) if interval is not None else None,
            "longest_pause_seconds": round(gap, 3) if gap is not None else None,
            "timeout_seconds": limits.timeout_seconds,
            "interval_multiple": limits.interval_multiple,
        }
        detail = (
            f"No new step for {_duration(silent_for)} since step {view.last_step}"
            + (f" (a step usually takes {interval:.2g} s)" if interval is not None else "")
            + f"; the threshold is {_duration(threshold)}."
        )
        return [Observation(view.last_step, True, evidence=evidence, detail=detail)]


def _pace(view: RunView, window: int, gap_window: int) -> tuple[float | None, float | None]:
    """Median seconds between the last `window` points of the run's pace series, and the
    longest pause between its last `gap_window` points."""
    for key in PACE_KEYS:
        times = view.series(key).times[-(gap_window + 1) :]
        if len(times) >= 3:
            intervals = np.diff(times)
            intervals = intervals[np.isfinite(intervals) & (intervals >= 0)]
            if len(intervals):
                return float(np.median(intervals[-window:])), float(intervals.max())
    return None, None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
