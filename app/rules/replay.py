"""Run rules over series held in memory, the way the engine runs them over a live run:
incrementally, a few steps at a time. Unit tests and `make eval-rules` use this; the
engine uses the same rules and the same episode logic over the database."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from app.jsonutil import decode_float
from app.rules.base import Rule, RunView, SeriesView
from app.rules.episodes import Episode, advance
from app.rules.limits import limits_for

log = logging.getLogger(__name__)


def replay(
    rules: Sequence[type[Rule]],
    series: Mapping[str, SeriesView],
    config: Mapping[str, Any] | None = None,
    *,
    every: int = 1,
    status: str = "running",
    now: float | None = None,
    defaults: BaseModel | None = None,
) -> list[Episode]:
    """Every episode that fired (firing at the end, or resolved), in step order.

    The rules are evaluated after every `every` distinct steps, each evaluation judging
    only the steps that arrived since the last one, as on a live run. `now`, when given,
    is the wall time of one last evaluation of the clock-based rules after the last point
    (a run that went quiet)."""
    config = dict(config or {})
    all_steps = np.unique(
        np.concatenate([np.empty(0, np.int64), *(v.steps for v in series.values())])
    )
    boundaries = [int(step) for step in all_steps[every - 1 :: every]]
    if len(all_steps) and (not boundaries or boundaries[-1] != int(all_steps[-1])):
        boundaries.append(int(all_steps[-1]))
    open_episodes: dict[str, dict[str, Episode]] = {rule.code: {} for rule in rules}
    fired: dict[int, Episode] = {}
    since = -1
    for boundary in boundaries:
        visible = {key: view.upto(boundary) for key, view in series.items()}
        view = _view(visible, config, status, since, boundary, now=None)
        for episode in evaluate(rules, view, open_episodes, defaults):
            fired[id(episode)] = episode
        since = boundary
    if now is not None and boundaries:
        # Then the clock moves on with no new point: what the clock-based rules see.
        clock_rules = [rule for rule in rules if rule.time_based]
        view = _view(visible, config, status, since, since, now)
        for episode in evaluate(clock_rules, view, open_episodes, defaults):
            fired[id(episode)] = episode
    return sorted(fired.values(), key=lambda episode: (episode.first_step, episode.code))


def _view(
    series: dict[str, SeriesView],
    config: dict[str, Any],
    status: str,
    since: int,
    last_step: int,
    now: float | None,
) -> RunView:
    """A replayed run's view; `now` defaults to when its latest point arrived."""
    last_write_time = max(
        (float(view.times[-1]) for view in series.values() if len(view)), default=0.0
    )
    return RunView(
        run_id=0,
        status=status,
        config=config,
        series=series,
        since=since,
        last_step=last_step,
        now=last_write_time if now is None else now,
        last_write_time=last_write_time,
    )


def evaluate(
    rules: Sequence[type[Rule]],
    view: RunView,
    open_episodes: dict[str, dict[str, Episode]],
    defaults: BaseModel | None = None,
) -> list[Episode]:
    """One incremental pass of every enabled rule over `view`. A rule that raises is
    logged and skipped: diagnostics never break ingestion."""
    changed: list[Episode] = []
    for rule in rules:
        limits = limits_for(rule, defaults, view.config)
        if not limits.enabled:
            continue
        try:
            observations = rule().check(view, limits)
        except Exception:
            log.exception("rule %s failed on run %s; skipped", rule.code, view.run_id)
            continue
        changed.extend(advance(rule, open_episodes.setdefault(rule.code, {}), observations))
    return changed


def load_metrics_jsonl(path: str | Path) -> dict[str, SeriesView]:
    """A trainer's `metrics.jsonl` ({"step", "metrics", "time"} per line) as series.
    A step logged twice (a resume that repeated steps) keeps its last value, as the
    database's upsert does."""
    points: dict[str, dict[int, tuple[float, float]]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            step, wall_time = int(record["step"]), float(record.get("time") or record["step"])
            for key, value in record["metrics"].items():
                points.setdefault(key, {})[step] = (decode_float(value), wall_time)
    result = {}
    for key, by_step in points.items():
        steps = sorted(by_step)
        result[key] = SeriesView.of(
            steps, [by_step[s][0] for s in steps], [by_step[s][1] for s in steps]
        )
    return result
