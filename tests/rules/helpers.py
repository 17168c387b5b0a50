"""Series builders and a one-call replay for rule unit tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from app.rules.base import Rule, SeriesView
from app.rules.episodes import Episode
from app.rules.replay import replay


def series(values: Iterable[float], start: int = 0, every: int = 1) -> SeriesView:
    """A series at steps start, start + every, ... (times = steps, in seconds)."""
    values = list(values)
    steps = range(start, start + every * len(values), every)
    return SeriesView.of(steps, values)


def noisy_decay(
    n: int, start: float = 4.2, end: float = 1.8, noise: float = 0.02, seed: int = 0
) -> np.ndarray:
    """A healthy-looking loss curve: exponential decay with multiplicative noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    curve = end + (start - end) * np.exp(-t / (n / 5))
    return curve * (1 + noise * rng.standard_normal(n))


def findings(
    rule: type[Rule],
    data: Mapping[str, SeriesView],
    config: Mapping[str, Any] | None = None,
    every: int = 5,
    **kwargs: Any,
) -> list[Episode]:
    return replay([rule], data, config, every=every, **kwargs)


def codes(episodes: Sequence[Episode]) -> list[str]:
    return [episode.code for episode in episodes]
