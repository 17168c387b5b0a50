"""Request and response shapes of the metric endpoints.

The ingest body has two descriptions of one contract: msgspec structs that decode a
valid body in one C pass (the fast path, app/metrics/ingest.py), and pydantic models
that document it in OpenAPI and name the exact field of an invalid one. Both are strict
in the same ways: a step is a JSON integer (not a boolean, not a string), a time is a
finite number, a value is a number or one of "NaN", "Infinity", "-Infinity"."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from trainlens.wire import MAX_STEP, check_metric_name, decode_float

# A metric value: a JSON number, or "NaN" / "Infinity" / "-Infinity".
MetricValue = Annotated[float, BeforeValidator(decode_float)]
MetricName = Annotated[str, AfterValidator(check_metric_name)]


class IngestRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: StrictInt = Field(ge=0, le=MAX_STEP)
    metrics: dict[MetricName, MetricValue] = Field(min_length=1)
    time: float | None = Field(
        default=None,
        strict=True,
        allow_inf_nan=False,
        description="Unix epoch seconds; default: now",
    )


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[IngestRow] = Field(min_length=1)


class WireRow(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """IngestRow for the fast path; names are checked once per batch, not per row.

    gc=False: a row holds only numbers, strings and a dict of them (never a cycle), so
    the garbage collector need not track the hundred thousand rows of a big body."""

    step: Annotated[int, msgspec.Meta(ge=0, le=MAX_STEP)]
    metrics: Annotated[
        dict[str, float | Literal["NaN", "Infinity", "-Infinity"]], msgspec.Meta(min_length=1)
    ]
    # msgspec refuses numbers beyond float64's range, so a decoded time is finite.
    time: float | None = None


class WireRequest(msgspec.Struct, forbid_unknown_fields=True):
    rows: Annotated[list[WireRow], msgspec.Meta(min_length=1)]


class IngestResponse(BaseModel):
    run_id: int
    rows: int
    points: int
    last_step: int | None


class SeriesOut(BaseModel):
    """One metric over a step range; non-finite values as "NaN", "Infinity", "-Infinity"."""

    steps: list[int]
    values: list[float | str]
    times: list[float]
    downsampled: bool
    method: str
    total_points: int


class SeriesResponse(BaseModel):
    run_id: int
    start: int | None
    end: int | None
    max_points: int
    series: dict[str, SeriesOut]


class HistoryResponse(BaseModel):
    """A page of full-resolution history: one row per step, one column per key (null
    where a key has no point at that step)."""

    run_id: int
    keys: list[str]
    steps: list[int]
    wall_times: list[float] = Field(description="the latest wall time among each step's points")
    columns: dict[str, list[float | str | None]]
    next_start: int | None = Field(description="pass as start for the next page; null at the end")
