"""What a rule is, and what it sees.

A rule reads a run's series through a `RunView` and returns `Observation`s: for the
steps it judged, whether its condition held. It never writes anything. The engine
turns a rule's observations into findings, one per episode (see `episodes.py`), so a
rule says "the loss at step 812 is a spike" and the engine decides that steps 812-815
are one finding that fired, and when it resolved.

Rules follow sqlfluff's pattern: one class per module, a stable `code`, a title, a
default severity, and a docstring that is the user-facing explanation.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}


class Thresholds(BaseModel):
    """A rule's tunable numbers. Subclasses add fields with the documented defaults."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Observation:
    """A rule's verdict on one step."""

    step: int
    active: bool  # the condition holds at this step
    subject: str = ""  # what it is about (a layer name); one episode per (code, subject)
    severity: Severity | None = None  # None: the rule's default severity
    evidence: Mapping[str, Any] = field(default_factory=dict)
    detail: str = ""  # a sentence about this case, shown before the general explanation
    fix: str | None = None  # advice for this case, instead of the rule's general fix


@dataclass(slots=True)
class SeriesView:
    """One metric's points up to the evaluated step: numpy arrays in step order, with
    NaN and infinities as real floats."""

    steps: np.ndarray  # int64
    values: np.ndarray  # float64
    times: np.ndarray  # float64, wall-clock seconds

    def __len__(self) -> int:
        return len(self.steps)

    def after(self, step: int) -> SeriesView:
        """The points with step > `step` (the new ones, when `step` is the cursor)."""
        start = int(np.searchsorted(self.steps, step, side="right"))
        return SeriesView(self.steps[start:], self.values[start:], self.times[start:])

    def upto(self, step: int) -> SeriesView:
        end = int(np.searchsorted(self.steps, step, side="right"))
        return SeriesView(self.steps[:end], self.values[:end], self.times[:end])

    def at(self, steps: np.ndarray) -> np.ndarray:
        """The value at each of `steps`; NaN where the series has no point there."""
        if not len(self):
            return np.full(len(steps), np.nan)
        index = np.clip(np.searchsorted(self.steps, steps), 0, len(self) - 1)
        return np.where(self.steps[index] == steps, self.values[index], np.nan)

    def index_of(self, step: int) -> int:
        """Position of the first point with step >= `step`."""
        return int(np.searchsorted(self.steps, step, side="left"))

    @classmethod
    def of(
        cls, steps: Iterable[int], values: Iterable[float], times: Iterable[float] | None = None
    ) -> SeriesView:
        """From plain sequences (tests, replays); times default to the steps."""
        steps_array = np.asarray(list(steps), dtype=np.int64)
        values_array = np.asarray(list(values), dtype=np.float64)
        times_array = (
            np.asarray(list(times), dtype=np.float64)
            if times is not None
            else steps_array.astype(np.float64)
        )
        return cls(steps_array, values_array, times_array)


EMPTY = SeriesView(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64))


class RunView:
    """A run as a rule sees it: its config, its series up to `last_step`, and which of
    their points are new.

    `since` is the last step already judged (-1 before the first evaluation). The points
    a rule judges are counted per key (`key_since`): a key whose point for an already
    judged step arrived late (an eval row after its step was judged) still has that
    point as new, so the rules that read the key judge it. Rules read their new points
    through `new`, `first_new` and `recent` (new points plus the history the rule needs
    before them) and never window from `since` themselves."""

    def __init__(
        self,
        *,
        run_id: int,
        status: str,
        config: Mapping[str, Any],
        series: Mapping[str, SeriesView] | None = None,
        loader: Any = None,
        key_names: Iterable[str] = (),
        since: int,
        last_step: int,
        now: float,
        last_write_time: float | None = None,
        key_since: Mapping[str, int] | None = None,
        source: str = "external",
        heartbeat_time: float | None = None,
        status_since: float | None = None,
    ) -> None:
        self.run_id = run_id
        self.status = status
        self.config = config
        self.since = since
        # None: every key was judged up to `since` (a replay); else per key, -1 if never.
        self._key_since = dict(key_since) if key_since is not None else None
        self.source = source  # "launched" (our trainer and worker) or "external"
        self.heartbeat_time = heartbeat_time  # the client's latest heartbeat, if any
        self.status_since = status_since  # when the run entered its status (a resume)
        self.last_step = last_step
        self.now = now
        self.last_write_time = last_write_time
        self._series: dict[str, SeriesView] = dict(series or {})
        self._loader = loader  # callable(names) -> {name: SeriesView}, for lazy loading
        self._key_names = sorted(set(key_names) | set(self._series))

    def series(self, key: str) -> SeriesView:
        """The key's points up to `last_step` (empty when the run never logged it)."""
        if key not in self._series:
            loaded = self._loader([key]) if self._loader and key in self._key_names else {}
            self._series[key] = loaded.get(key, EMPTY).upto(self.last_step)
        return self._series[key]

    def since_of(self, key: str) -> int:
        """The last step of `key` already judged."""
        if self._key_since is None:
            return self.since
        return self._key_since.get(key, -1)

    def first_new(self, key: str) -> int:
        """Position in `series(key)` of the key's first point not yet judged."""
        return self.series(key).index_of(self.since_of(key) + 1)

    def new(self, key: str) -> SeriesView:
        """The key's points not yet judged."""
        return self.series(key).after(self.since_of(key))

    def recent(self, key: str, lookback: int) -> tuple[SeriesView, int]:
        """The key's new points with up to `lookback` points of history before them, and
        the position of the first new point in that slice: the whole of what a rule with
        a window of `lookback` points reads."""
        series = self.series(key)
        first = series.index_of(self.since_of(key) + 1)
        start = max(0, first - lookback)
        return (
            SeriesView(series.steps[start:], series.values[start:], series.times[start:]),
            first - start,
        )

    @property
    def launched(self) -> bool:
        """Our trainer under our worker: its texts may mention checkpoints and presets."""
        return self.source == "launched"

    def keys(self, pattern: str) -> list[str]:
        """The run's metric keys matching a glob, e.g. `act/*/frac_dead`."""
        return [name for name in self._key_names if fnmatch.fnmatchcase(name, pattern)]

    def config_number(self, name: str) -> float | None:
        """A numeric config field (`vocab_size`, `grad_clip`, ...), or None when absent.
        External runs may lack any field; a rule that needs one stays silent."""
        value = self.config.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if math.isfinite(value) else None

    def vocab_size(self) -> float | None:
        """From the config, else from the trainer's `data/vocab_size` marker."""
        configured = self.config_number("vocab_size")
        if configured is not None:
            return configured
        marker = self.series("data/vocab_size")
        return float(marker.values[0]) if len(marker) else None


class Rule:
    """Base class. The class docstring is the explanation users read."""

    code: ClassVar[str]
    title: ClassVar[str]
    severity: ClassVar[Severity]
    fix: ClassVar[str]
    thresholds: ClassVar[type[Thresholds]] = Thresholds
    # Prometheus's `for` / `keep_firing_for`, counted in observations: how many active
    # ones in a row before a finding fires, and clear ones in a row before it resolves.
    pending_for: ClassVar[int] = 1
    keep_firing_for: ClassVar[int] = 1
    # Judged on a clock as well as on new points (a run that stopped logging).
    time_based: ClassVar[bool] = False
    # Its subjects are layers: their episodes share one finding listing the layers.
    per_layer: ClassVar[bool] = False
    # (other rule's code, steps): a finding of the other rule that began at most this
    # many steps before this one is linked to it (a grad-norm spike warning of a loss spike).
    links_to: ClassVar[tuple[str, int] | None] = None

    # Texts for a run fed by the user's own script (source "external"), where the
    # general ones mention our trainer, worker, checkpoints or actions; None: the same.
    explanation_external: ClassVar[str | None] = None
    fix_external: ClassVar[str | None] = None
    # The explanation once an episode resolved, where the general one assumes it cannot
    # (a NaN that did not come back); None: the same.
    recovered_explanation: ClassVar[str | None] = None

    @classmethod
    def explanation(cls, source: str = "launched", resolved: bool = False) -> str:
        text = cls.__doc__ or ""
        if source != "launched" and cls.explanation_external:
            text = cls.explanation_external
        if resolved and cls.recovered_explanation:
            text = cls.recovered_explanation
        return " ".join(text.split())

    @classmethod
    def fix_for(cls, source: str = "launched") -> str:
        if source != "launched" and cls.fix_external:
            return cls.fix_external
        return cls.fix

    def check(self, view: RunView, limits: Any) -> list[Observation]:
        """Judge the steps after `view.since`; `limits` is an instance of `thresholds`."""
        raise NotImplementedError
