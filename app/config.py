"""The one settings class: every configurable value comes from here (env prefix TRAINLENS_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.rules.registry import RuleSettings


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINLENS_", env_nested_delimiter="__")

    data_dir: Path = Field(default=Path("./var"), description="database, datasets, checkpoints")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default is SQLite under data_dir"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = Field(default=None, description="when set, /api requires this bearer token")
    auto_migrate: bool = Field(default=False, description="apply migrations at start-up")
    embedded_worker: bool = Field(default=True, description="`serve` also runs one local worker")

    # live updates
    stream_poll_seconds: float = Field(default=0.1, gt=0, le=5)
    stream_keepalive_seconds: float = Field(default=15.0, gt=0)
    event_retention_seconds: float = Field(default=900.0, gt=0)

    # queries
    default_max_points: int = Field(default=2000, ge=4)
    max_points_limit: int = Field(default=200_000, ge=4)
    series_cache_mb: int = Field(default=512, ge=0)
    ingest_max_rows: int = Field(default=100_000, ge=1)
    dataset_max_mb: int = Field(default=200, ge=1)

    # run lifecycle
    heartbeat_seconds: float = Field(default=3.0, gt=0)
    heartbeat_timeout_seconds: float = Field(default=30.0, gt=0)
    stop_grace_seconds: float = Field(default=10.0, gt=0)
    worker_slots: int | None = Field(
        default=None, ge=1, description="concurrent runs; default one per visible GPU, one on CPU"
    )
    worker_poll_seconds: float = Field(default=0.5, gt=0, le=10)
    gpu_name: str | None = Field(
        default=None,
        description="the GPU the workers train on (e.g. 'H100'): launches are checked "
        "against its memory; unset, cuda runs are checked against the largest known GPU",
    )
    worker_alive_file: Path | None = Field(
        default=None, description="touched every worker round, for container health checks"
    )

    # rule engine
    rules_enabled: bool = Field(default=True, description="run the rule engine in the API")
    rules_poll_seconds: float = Field(default=0.25, gt=0, le=5)
    rules_clock_seconds: float = Field(
        default=5.0, gt=0, description="how often clock-based rules (stalled) are judged"
    )
    rules_settle_seconds: float = Field(
        default=1.0,
        ge=0,
        description="the latest step of a running run is judged once no row has arrived for "
        "this long (earlier steps at once), so all the keys of a step are judged together",
    )
    rules_webhook_url: str | None = Field(
        default=None, description="every new finding is POSTed here (a run may set its own)"
    )
    rules: RuleSettings = Field(  # type: ignore[valid-type]
        default_factory=RuleSettings, description="thresholds of every rule, by rule code"
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'trainlens.db').resolve()}"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"


@lru_cache
def get_settings() -> Settings:
    return Settings()
