"""Typed SQLAlchemy models. Importable without FastAPI, so the worker can use them."""

from app.models.base import Base
from app.models.dataset import Dataset
from app.models.finding import Finding, RuleState
from app.models.metric import (
    Event,
    Metric,
    MetricKey,
    MetricLod,
    NonFinite,
    RunSeries,
    Sample,
)
from app.models.run import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    RESUMABLE_STATUSES,
    Run,
    RunSource,
    RunStatus,
)
from app.models.worker import WorkerLease

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "RESUMABLE_STATUSES",
    "Base",
    "Dataset",
    "Event",
    "Finding",
    "Metric",
    "MetricKey",
    "MetricLod",
    "NonFinite",
    "RuleState",
    "Run",
    "RunSource",
    "RunSeries",
    "RunStatus",
    "Sample",
    "WorkerLease",
]
