"""Reading and acknowledging findings. The rule engine (app/rules) writes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import not_found
from app.events import EventKind, publish
from app.findings.schemas import FindingOut
from app.metrics.store import MetricStore
from app.models import Finding, Metric, Run
from app.models.base import now
from app.rules.diagnosis import RunFacts, diagnose


def finding_out(finding: Finding) -> FindingOut:
    return FindingOut.model_validate(finding, from_attributes=True)


def finding_payload(finding: Finding) -> dict[str, Any]:
    """What the change feed carries for a finding (the same shape as the REST answer)."""
    return finding_out(finding).model_dump(mode="json")


def list_findings(
    session: Session,
    run_id: int,
    states: Sequence[str] | None,
    severities: Sequence[str] | None,
) -> list[FindingOut]:
    if session.get(Run, run_id) is None:
        raise not_found("run", run_id)
    query = select(Finding).where(Finding.run_id == run_id)
    if states:
        query = query.where(Finding.state.in_(states))
    if severities:
        query = query.where(Finding.severity.in_(severities))
    rows = session.scalars(query.order_by(Finding.first_step, Finding.id)).all()
    return [finding_out(row) for row in rows]


def run_diagnosis(session: Session, store: MetricStore, run_id: int) -> dict[str, Any]:
    """The run's findings grouped by cause (see app/rules/diagnosis.py)."""
    run = session.get(Run, run_id)
    if run is None:
        raise not_found("run", run_id)
    findings = session.scalars(
        select(Finding).where(Finding.run_id == run_id).order_by(Finding.first_step, Finding.id)
    ).all()
    keys = store.run_keys(session, run_id)
    layer_counts = {
        stat: sum(1 for name in keys if name.startswith(prefix) and name.endswith("/" + stat))
        for prefix, stat in (
            ("act/", "frac_saturated"),
            ("act/", "frac_dead"),
            ("act/", "std"),
            ("update/", "ratio"),
        )
    }
    config = run.config or {}
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int | float) and "data/vocab_size" in keys:
        vocab = session.scalar(
            select(Metric.value)
            .where(Metric.run_id == run_id, Metric.key_id == keys["data/vocab_size"].key_id)
            .limit(1)
        )
    facts = RunFacts(
        config=config,
        source=str(run.source),
        has_data=bool(keys),
        vocab_size=float(vocab) if isinstance(vocab, int | float) else None,
        layer_counts=layer_counts,
    )
    return diagnose(run_id, facts, findings)


def acknowledge(session: Session, finding_id: int) -> FindingOut:
    finding = session.get(Finding, finding_id)
    if finding is None:
        raise not_found("finding", finding_id)
    if finding.state != "acknowledged":
        finding.state = "acknowledged"
        finding.acknowledged_at = now()
        finding.updated_at = finding.acknowledged_at
        session.flush()
        publish(session, finding.run_id, EventKind.finding, finding_payload(finding))
    return finding_out(finding)
