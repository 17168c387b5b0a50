"""What workers send and receive. Workers are torch-only processes that reach the
database only through these endpoints (and the metric ingest)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.runs.schemas import RunFiles
from app.strict import RUN_ID_MAX, StorableText

INT32_MAX = 2**31 - 1  # the pid column


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


WorkerName = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@\-]+$")


class WorkerHello(StrictModel):
    """A worker process asking for its name's lease."""

    name: str = WorkerName
    instance: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    host: str = Field(min_length=1, max_length=200)
    pid: int = Field(ge=1, le=INT32_MAX)
    slots: int = Field(ge=1, le=1024)


class Lease(BaseModel):
    name: str
    instance: str
    lease_seconds: float  # renew well within this, or the lease (and its runs) expire


class Beat(StrictModel):
    instance: str = Field(min_length=8, max_length=64)
    runs: list[Annotated[int, Field(ge=1, le=RUN_ID_MAX)]] = Field(
        default_factory=list, max_length=1024
    )


class Directives(BaseModel):
    """What the API asks of a worker's runs: stop them (gracefully), or kill them
    (deleted, or no longer this worker's)."""

    stop: list[int]
    kill: list[int]


class ClaimRequest(StrictModel):
    instance: str = Field(min_length=8, max_length=64)
    max_nproc: int = Field(default=1, ge=1, le=1024)
    # Runs whose checkpoints this worker holds on its own disk: among queued runs, these
    # go to it first (no download; after a crash of this worker, its copy is the newest).
    prefer: list[Annotated[int, Field(ge=1, le=RUN_ID_MAX)]] = Field(
        default_factory=list, max_length=1024
    )


class DatasetRef(BaseModel):
    name: str
    sha256: str | None  # None: the built-in corpus, which every worker has


class ClaimedRun(BaseModel):
    id: int
    attempt: int
    config: dict[str, Any]
    dataset: DatasetRef
    files: RunFiles  # what the API holds of the run (a resume's checkpoint)


class Outcome(StrictModel):
    """How a run's training process ended, as its worker saw it. The API turns this into
    the run's status (the worker no longer writes statuses itself)."""

    instance: str = Field(min_length=8, max_length=64)
    result: Literal["completed", "stopped", "none"]  # from the child's result file
    exit_code: int
    killed: bool = False  # the worker had to SIGKILL it
    worker_shutdown: bool = False  # ended because the worker itself shut down
    reason: StorableText | None = Field(default=None, max_length=4000)  # the child's own
    output_tail: StorableText = Field(default="", max_length=20_000)


class WorkerOut(BaseModel):
    name: str
    host: str
    pid: int
    slots: int
    started_at: float
    seen_at: float
    alive: bool = False  # the lease is fresh


class RunState(BaseModel):
    id: int
    status: str
    worker_id: str | None
