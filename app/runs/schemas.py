"""Request and response shapes of the run endpoints. Times are Unix epoch seconds."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.metrics.store import without_nul
from app.models import RunStatus
from app.strict import PlainName

# Free text a script or a person writes (an error, notes, a sample): kept, NUL and all
# (as U+FFFD). Names and tags, which identify, refuse control characters instead.
LoggedText = Annotated[str, AfterValidator(without_nul)]


class RunCreate(BaseModel):
    """A launched run (queued for a worker; `config` is a TrainConfig, optionally on top
    of a `preset`) or an external run fed by a script (`config` is free-form; the rule
    engine reads vocab_size, grad_clip, warmup_steps, max_steps, schedule, lr, min_lr
    from it when present)."""

    model_config = ConfigDict(extra="forbid")

    name: PlainName | None = Field(default=None, max_length=200)
    source: Literal["launched", "external"] = "launched"
    preset: str | None = Field(default=None, max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)


class RunFinish(BaseModel):
    """How an external run ended, reported by its script."""

    model_config = ConfigDict(extra="forbid")

    # "crashed": `trainlens sync` of a journal whose script never finished
    status: Literal["completed", "failed", "stopped", "crashed"] = "completed"
    error: LoggedText | None = Field(default=None, max_length=20_000)


# A tag: no commas (the table's filter lists them), no leading blank.
Tag = Annotated[PlainName, Field(min_length=1, max_length=64, pattern=r"^[^,\s][^,]*$")]


class RunUpdate(BaseModel):
    """Rename a run, set its tags (the whole list) or its notes; fields left out stay."""

    model_config = ConfigDict(extra="forbid")

    name: PlainName | None = Field(default=None, min_length=1, max_length=200)
    tags: list[Tag] | None = Field(default=None, max_length=32)
    notes: LoggedText | None = Field(default=None, max_length=20_000)


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
    error_line: str | None = Field(description="the line of `error` that matters")
    resume_blocked: str | None = Field(
        description="why Resume would fail the same way (a failure the config causes)"
    )
    queue_position: int | None = Field(description="1 = the next run a worker claims")
    phase: str | None = Field(description="what a started run without steps is doing")
    tags: list[str]
    notes: str
    config: dict[str, Any]
    latest: dict[str, LatestPoint]
    findings: FindingCounts


class RunDetail(RunSummary):
    keys: list[str]


class RunColumns(BaseModel):
    """What the runs table can show, filter and sort by."""

    fields: list[str]
    config: list[str]
    metrics: list[str]
    tags: list[str]
    presets: list[str]


class LogChunk(BaseModel):
    text: str
    offset: int
    next_offset: int
    size: int
    exists: bool


class CheckpointOut(BaseModel):
    name: str
    step: int | None
    val_loss: float | None
    size_bytes: int
    modified_at: float
    url: str


class RunList(BaseModel):
    runs: list[RunSummary]
    total: int
    limit: int
    offset: int


class SampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Steps are exact in float64 up to 2**53, as for metric rows.
    step: int = Field(ge=0, le=2**53)
    text: str = Field(max_length=100_000)  # add_sample stores it without NUL


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


class RunFile(BaseModel):
    size: int
    sha256: str | None  # None: written at the API's own disk by a local worker


class RunFiles(BaseModel):
    """A run's folder at the API and the files a worker exchanges with it."""

    device: int
    inode: int
    files: dict[str, RunFile]
