"""Response shapes of the finding endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class FindingOut(BaseModel):
    id: int
    run_id: int
    code: str
    title: str
    severity: str
    state: str
    first_step: int | None
    last_step: int | None
    evidence: dict[str, Any]
    explanation: str
    fix: str
    linked_finding_id: int | None
    created_at: float
    updated_at: float
    resolved_at: float | None
    acknowledged_at: float | None


class SymptomOut(BaseModel):
    finding_id: int
    code: str
    title: str
    layers: list[str]


class DiagnosisItem(BaseModel):
    cause: str
    severity: Literal["info", "warning", "critical"]
    title: str
    summary: str
    fix: str
    first_step: int | None
    last_step: int | None
    finding_ids: list[int]
    symptoms: list[SymptomOut]


class DiagnosisOut(BaseModel):
    run_id: int
    state: Literal["healthy", "problems", "no_data"]
    diagnoses: list[DiagnosisItem]
