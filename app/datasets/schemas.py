"""Request and response shapes of the dataset endpoints."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.strict import StorableText


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="letters, digits, '.', '_' and '-'",
    )
    text: StorableText = Field(min_length=1, description="the corpus, UTF-8 text")


class DatasetOut(BaseModel):
    name: str
    builtin: bool
    size_bytes: int
    n_chars: int
    n_symbols: int
    sha256: str | None
    created_at: float | None
