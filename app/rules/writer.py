"""Episodes to findings: the rule engine's writing half.

Each episode that fired is one `findings` row, created when it opens and updated as it
extends or resolves; every change goes out on the change feed, so live pages see it.
A per-layer rule keeps one episode per layer but one finding per rule: the layers whose
episodes overlap share a finding that lists them (ten saturated layers are one symptom,
not ten), resolved once every one of its layers has recovered.
A user's acknowledgement sticks: a later update to the same episode keeps it acknowledged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.events import EventKind, publish
from app.findings.service import finding_payload
from app.models import Finding, Run
from app.models.base import now
from app.rules.base import SEVERITY_RANK, Rule
from app.rules.episodes import Episode
from app.rules.layers import depth_order


def save_episodes(
    session: Session,
    run_id: int,
    episodes: Sequence[Episode],
    rules: Mapping[str, type[Rule]],
) -> list[Finding]:
    """Write each episode's finding; returns the findings that were opened just now."""
    opened: list[Finding] = []
    run = session.get(Run, run_id)
    source = str(run.source) if run is not None else "external"
    for episode in episodes:
        rule = rules[episode.code]
        finding = session.get(Finding, episode.finding_id) if episode.finding_id else None
        if finding is None and rule.per_layer and episode.subject:
            finding = _open_finding(session, run_id, rule.code)
        if finding is None:
            finding = Finding(run_id=run_id, code=rule.code, created_at=now())
            session.add(finding)
            opened.append(finding)
        if rule.per_layer and episode.subject:
            _fill_layers(finding, rule, episode, source)
        else:
            _fill(finding, rule, episode, source)
        session.flush()
        episode.finding_id = finding.id
        if finding in opened and rule.links_to is not None:
            _link(session, finding, *rule.links_to)
        publish(session, run_id, EventKind.finding, finding_payload(finding))
    return opened


def _fill(finding: Finding, rule: type[Rule], episode: Episode, source: str) -> None:
    finding.title = f"{rule.title} ({episode.subject})" if episode.subject else rule.title
    finding.severity = episode.severity
    finding.first_step = episode.first_step
    finding.last_step = episode.last_step
    evidence = dict(episode.evidence)
    if episode.subject:
        evidence["subject"] = episode.subject
    finding.evidence = evidence
    explanation = rule.explanation(source, resolved=episode.state == "resolved")
    finding.explanation = " ".join(part for part in (episode.detail, explanation) if part)
    finding.fix = episode.fix or rule.fix_for(source)
    finding.updated_at = now()
    if episode.state == "resolved":
        finding.resolved_at = finding.resolved_at or finding.updated_at
        if finding.state != "acknowledged":
            finding.state = "resolved"
    elif finding.state is None:
        finding.state = "firing"


def _open_finding(session: Session, run_id: int, code: str) -> Finding | None:
    return session.scalars(
        select(Finding)
        .where(Finding.run_id == run_id, Finding.code == code, Finding.resolved_at.is_(None))
        .order_by(Finding.id.desc())
        .limit(1)
    ).first()


def _fill_layers(finding: Finding, rule: type[Rule], episode: Episode, source: str) -> None:
    """One finding for the layers of a per-layer rule: the worst layer's evidence and
    words, the union of their step ranges, and which layers are still affected."""
    old = dict(finding.evidence or {})
    states: dict[str, str] = dict(old.get("layer_states") or {})
    states[episode.subject] = "resolved" if episode.state == "resolved" else "firing"
    layers = sorted(states, key=depth_order)
    active = [layer for layer in layers if states[layer] == "firing"]
    worst = finding.severity is None or (
        SEVERITY_RANK[episode.severity] >= SEVERITY_RANK.get(finding.severity, 0)
        and (episode.state != "resolved" or not old.get("active_layers"))
    )
    if worst:
        evidence = dict(episode.evidence) | {"subject": episode.subject}
        finding.severity = episode.severity
        detail = episode.detail
        fix = episode.fix
    else:
        evidence = {k: v for k, v in old.items() if k not in ("layers", "active_layers")}
        detail = str(old.get("detail") or "")
        fix = None
    evidence |= {
        "layers": layers,
        "active_layers": active,
        "layer_states": states,
        "detail": detail,
    }
    finding.evidence = evidence
    named = ", ".join(layers[:6]) + (f" and {len(layers) - 6} more" if len(layers) > 6 else "")
    count = "" if len(layers) == 1 else f"{len(layers)} layers: "
    finding.title = f"{rule.title} ({count}{named})"[:200]
    if finding.first_step is None or episode.first_step < finding.first_step:
        finding.first_step = episode.first_step
    if finding.last_step is None or episode.last_step > finding.last_step:
        finding.last_step = episode.last_step
    resolved = not active
    explanation = rule.explanation(source, resolved=resolved)
    finding.explanation = " ".join(part for part in (detail, explanation) if part)
    finding.fix = fix or finding.fix or rule.fix_for(source)
    finding.updated_at = now()
    if resolved:
        finding.resolved_at = finding.resolved_at or finding.updated_at
        if finding.state != "acknowledged":
            finding.state = "resolved"
    elif finding.state is None:
        finding.state = "firing"


def _link(session: Session, finding: Finding, other_code: str, within_steps: int) -> None:
    """Link a new finding to the other rule's finding that began just before it (a
    grad-norm spike that warned of this loss spike), both ways."""
    assert finding.first_step is not None
    other = session.scalars(
        select(Finding)
        .where(Finding.run_id == finding.run_id, Finding.code == other_code)
        .where(Finding.first_step >= finding.first_step - within_steps)
        .where(Finding.first_step <= finding.first_step)
        .order_by(Finding.first_step.desc())
        .limit(1)
    ).first()
    if other is None:
        return
    finding.linked_finding_id = other.id
    other.linked_finding_id = finding.id
    other.updated_at = now()
    publish(session, other.run_id, EventKind.finding, finding_payload(other))
