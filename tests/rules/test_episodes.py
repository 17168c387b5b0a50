"""Observations to episodes: pending, firing, resolved; one finding per episode."""

from __future__ import annotations

from app.rules.base import Observation, Rule
from app.rules.episodes import Episode, advance


class Flappy(Rule):
    """A test rule that needs 3 active steps to fire and 2 clear ones to resolve."""

    code = "flappy"
    title = "Flappy"
    severity = "warning"
    fix = "-"
    pending_for = 3
    keep_firing_for = 2


def observe(pattern: str, start: int = 0, subject: str = "") -> list[Observation]:
    """'x' active, '.' clear, 'C' active and critical, one character per step."""
    return [
        Observation(
            start + i,
            char != ".",
            subject=subject,
            severity="critical" if char == "C" else None,
            evidence={"step": start + i},
        )
        for i, char in enumerate(pattern)
    ]


def test_a_blip_shorter_than_pending_for_never_fires() -> None:
    open_episodes: dict[str, Episode] = {}
    assert advance(Flappy, open_episodes, observe("xx.xx.")) == []
    assert open_episodes == {}


def test_one_episode_survives_a_single_clear_step_and_resolves_after_two() -> None:
    open_episodes: dict[str, Episode] = {}
    (episode,) = advance(Flappy, open_episodes, observe("xxxx.xx..x"))
    assert (episode.first_step, episode.last_step, episode.state) == (0, 6, "resolved")
    assert episode.evidence["resolved_step"] == 8 and episode.evidence["steps_to_resolve"] == 8
    assert open_episodes[""].state == "pending"  # the trailing x starts a new candidate


def test_the_same_episode_continues_across_batches() -> None:
    open_episodes: dict[str, Episode] = {}
    (first,) = advance(Flappy, open_episodes, observe("xxx"))
    (again,) = advance(Flappy, open_episodes, observe("xx", start=3))
    assert again is first and again.last_step == 4 and again.state == "firing"
    restored = {"": Episode.from_state(first.to_state())}
    (after_restart,) = advance(Flappy, restored, observe("..", start=5))
    assert after_restart.state == "resolved" and after_restart.first_step == 0


def test_severity_escalates_with_the_worst_evidence_and_subjects_are_separate() -> None:
    open_episodes: dict[str, Episode] = {}
    changed = advance(
        Flappy, open_episodes, observe("xxxCx", subject="h0") + observe("xxx", subject="h1")
    )
    by_subject = {episode.subject: episode for episode in changed}
    assert by_subject["h0"].severity == "critical" and by_subject["h0"].evidence["step"] == 3
    assert by_subject["h1"].severity == "warning" and by_subject["h1"].first_step == 0
