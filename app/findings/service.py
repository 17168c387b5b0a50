"""Reading and acknowledging findings. The rule engine (app/rules) writes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import not_found
from app.events import EventKind, publish
from app.findings.schemas import FindingOut
from app.models import Finding, Run
from app.models.base import now


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
