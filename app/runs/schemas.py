"""Request and response shapes of the run endpoints. Times are Unix epoch seconds."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.models import RunStatus


class RunCreate(BaseModel):
    """A launched run (queued for a worker; `config` is a TrainConfig, optionally on top
    of a `preset`) or an external run fed by a script (`config` is free-form; the rule
    engine reads vocab_size, grad_clip, warmup_steps, max_steps, schedule, lr, min_lr
    from it when present)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    source: Literal["launched", "external"] = "launched"
    preset: str | None = Field(default=None, max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)


class RunFinish(BaseModel):
    """How an external run ended, reported by its script."""

    model_config = ConfigDict(extra="forbid")

    # "crashed": `trainlens sync` of a journal whose script never finished
    status: Literal["completed", "failed", "stopped", "crashed"] = "completed"
    error: str | None = Field(default=None, max_length=20_000)


class LatestPoint(BaseModel):
    step: int
    value: float | str
    time: float


class FindingCounts(BaseModel):
    info: int = 0
    warning: int = 0
    critical: int = 0
    firing: int = 0


class RunSummary(BaseModel):
    id: int
    name: str
    source: str
    status: RunStatus
    preset: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    last_step: int | None
    last_step_at: float | None
    max_steps: int | None
    tokens_per_step: int | None
    attempt: int
    error: str | None
    latest: dict[str, LatestPoint]
    findings: FindingCounts


class RunDetail(RunSummary):
    config: dict[str, Any]
    keys: list[str]


class RunList(BaseModel):
    runs: list[RunSummary]
    total: int
    limit: int
    offset: int


class SampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0)
    text: str = Field(max_length=100_000)


class SampleOut(BaseModel):
    step: int
    text: str
    created_at: float


class Preset(BaseModel):
    name: str
    title: str
    description: str
    expected_findings: list[str]
    overrides: dict[str, Any]
    config: dict[str, Any]
