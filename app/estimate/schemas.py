"""Request and response shapes of the memory estimate."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EstimateRequest(BaseModel):
    """A launched run's config (TrainConfig fields), optionally on top of a preset."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = Field(default=None, max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)


class EstimateOut(BaseModel):
    total_bytes: int  # the sum of every byte term
    fits: bool  # total_bytes <= device_bytes (true when the device's memory is unknown)
    device: str  # what the estimate was checked against, in words
    device_bytes: int | None
    terms: dict[str, int]  # bytes, except `parameters` (a count)
    activations_without_checkpointing: int
    activations_with_checkpointing: int
    largest_term: str
    advice: str  # what to change when it does not fit
