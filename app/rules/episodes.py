"""Observations to episodes: Prometheus's pending -> firing -> resolved, counted in
observations instead of seconds.

A rule reports, step by step, whether its condition holds. One noisy step should not
flap the dashboard, and one long episode should not raise a finding per step, so:
- `pending_for` active observations in a row open an episode (the finding fires);
- while it fires, active observations extend it (`last_step`) and may raise its severity;
- `keep_firing_for` clear observations in a row resolve it; the next active one starts
  a new episode.
This module is pure: the engine persists episodes as findings, replays keep them in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from app.jsonutil import sanitize
from app.rules.base import SEVERITY_RANK, Observation, Rule


@dataclass(slots=True)
class Episode:
    code: str
    subject: str
    state: str  # pending | firing | resolved
    first_step: int
    last_step: int
    severity: str
    evidence: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    fix: str | None = None  # the observation's own advice, if it had one
    active_streak: int = 0
    clear_streak: int = 0
    finding_id: int | None = None

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Episode:
        return cls(**state)


def advance(
    rule: type[Rule], open_episodes: dict[str, Episode], observations: Iterable[Observation]
) -> list[Episode]:
    """Apply observations (any order; judged in step order) to the rule's open episodes
    (pending or firing, by subject), in place. Returns the episodes whose finding must
    be written: opened, extended or resolved, each once, in the order they changed."""
    changed: dict[int, Episode] = {}  # by id(): an episode may open and resolve in one batch
    for observation in sorted(observations, key=lambda obs: obs.step):
        episode = open_episodes.get(observation.subject)
        if observation.active:
            episode = _on_active(rule, open_episodes, episode, observation)
        elif episode is not None:
            episode = _on_clear(rule, open_episodes, episode, observation)
        if episode is not None and episode.state != "pending":
            changed[id(episode)] = episode
    return list(changed.values())


def _on_active(
    rule: type[Rule],
    open_episodes: dict[str, Episode],
    episode: Episode | None,
    observation: Observation,
) -> Episode:
    severity = observation.severity or rule.severity
    if episode is None:
        episode = Episode(
            code=rule.code,
            subject=observation.subject,
            state="pending",
            first_step=observation.step,
            last_step=observation.step,
            severity=severity,
            evidence=sanitize(dict(observation.evidence)),
            detail=observation.detail,
            fix=observation.fix,
        )
        open_episodes[observation.subject] = episode
    episode.last_step = observation.step
    episode.active_streak += 1
    episode.clear_streak = 0
    if SEVERITY_RANK[severity] > SEVERITY_RANK[episode.severity]:
        # The evidence shown is that of the worst moment of the episode.
        episode.severity = severity
        episode.evidence = sanitize(dict(observation.evidence))
        episode.detail = observation.detail
        episode.fix = observation.fix
    if episode.state == "pending" and episode.active_streak >= rule.pending_for:
        episode.state = "firing"
    return episode


def _on_clear(
    rule: type[Rule],
    open_episodes: dict[str, Episode],
    episode: Episode,
    observation: Observation,
) -> Episode | None:
    episode.active_streak = 0
    if episode.state == "pending":
        del open_episodes[episode.subject]  # never fired: forget it
        return None
    episode.clear_streak += 1
    if episode.clear_streak >= rule.keep_firing_for:
        episode.state = "resolved"
        episode.evidence["resolved_step"] = observation.step
        episode.evidence["steps_to_resolve"] = observation.step - episode.first_step
        episode.evidence.update(sanitize(dict(observation.evidence)))
        del open_episodes[episode.subject]
    return episode
