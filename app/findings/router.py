"""Finding endpoints: a run's findings, and acknowledging one."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from app.deps import ReadSession, WriteSession, get_store
from app.findings import service
from app.findings.schemas import DiagnosisOut, FindingOut
from app.metrics.store import MetricStore
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


@router.get("/runs/{run_id}/diagnosis", response_model=DiagnosisOut)
def run_diagnosis(
    run_id: RunId, session: ReadSession, store: Annotated[MetricStore, Depends(get_store)]
) -> DiagnosisOut:
    """The run's findings grouped by the cause they share, root cause first: each
    diagnosis has a summary with the run's own numbers, a fix, and its symptoms. Also
    sent as the `diagnosis` event on the run's stream whenever it changes."""
    return DiagnosisOut.model_validate(service.run_diagnosis(session, store, run_id))


@router.post("/findings/{finding_id}/ack", response_model=FindingOut)
def acknowledge_finding(finding_id: FindingId, session: WriteSession) -> FindingOut:
    """Mark a finding as seen; it stays listed, in state `acknowledged`."""
    return service.acknowledge(session, finding_id)
