"""Finding endpoints: a run's findings, and acknowledging one."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.deps import ReadSession, WriteSession
from app.findings import service
from app.findings.schemas import FindingOut
from app.strict import FindingId, RunId

router = APIRouter(tags=["findings"])

State = Literal["firing", "resolved", "acknowledged"]
Severity = Literal["info", "warning", "critical"]


@router.get("/runs/{run_id}/findings", response_model=list[FindingOut])
def list_findings(
    run_id: RunId,
    session: ReadSession,
    state: Annotated[list[State] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
) -> list[FindingOut]:
    """What the rule engine found in the run, one finding per episode, in step order."""
    return service.list_findings(session, run_id, state, severity)


@router.post("/findings/{finding_id}/ack", response_model=FindingOut)
def acknowledge_finding(finding_id: FindingId, session: WriteSession) -> FindingOut:
    """Mark a finding as seen; it stays listed, in state `acknowledged`."""
    return service.acknowledge(session, finding_id)
