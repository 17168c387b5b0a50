"""Request and response shapes of the metric endpoints."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.jsonutil import decode_float

# A metric value: a JSON number, or "NaN" / "Infinity" / "-Infinity".
MetricValue = Annotated[float, BeforeValidator(decode_float)]
# No whitespace, comma (the query's key separator) or control character (PostgreSQL
# cannot store NUL; the others break CSV and logs).
MetricName = Annotated[
    str, Field(min_length=1, max_length=255, pattern=r"^[^\s,\x00-\x1f\x7f]+$")
]


class IngestRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Steps travel through float64 arrays on the way out, exact up to 2**53.
    step: int = Field(ge=0, le=2**53)
    metrics: dict[MetricName, MetricValue] = Field(min_length=1)
    time: float | None = Field(default=None, description="Unix epoch seconds; default: now")


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[IngestRow] = Field(min_length=1)


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
