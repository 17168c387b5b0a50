"""The one settings class: every configurable value comes from here (env prefix TRAINLENS_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.rules.registry import RuleSettings


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINLENS_", env_nested_delimiter="__")

    data_dir: Path = Field(default=Path("./var"), description="database, datasets, checkpoints")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default is SQLite under data_dir"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = Field(
        default=None,
        description="when set, /api requires this bearer token (or a session cookie from "
        "POST /api/session); empty means no token",
    )
    worker_token: str | None = Field(
        default=None,
        description="a second bearer token for workers: it reaches only the worker endpoints "
        "(/api/workers/...) and the metric and sample ingest; the main token works too",
    )
    session_hours: float = Field(default=12.0, gt=0, description="lifetime of a login session")
    # Comma-separated in the environment. The loopback names and `host` are always served
    # (a rebinding page cannot make a browser send them), so health checks keep working.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="more Host header values to serve (a leading '.' allows subdomains, '*' any)",
    )
    max_body_mb: float = Field(
        default=32, gt=0, description="largest request body (dataset uploads: dataset_max_mb)"
    )
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
    run_file_max_mb: int = Field(
        default=100_000, ge=1, description="largest checkpoint a worker may upload"
    )

    # run lifecycle
    heartbeat_seconds: float = Field(default=3.0, gt=0)
    heartbeat_timeout_seconds: float = Field(default=30.0, gt=0)
    external_heartbeat_timeout_seconds: float = Field(
        default=45.0,
        gt=0,
        description="an external run without heartbeat or data this long becomes crashed "
        "(the client beats every 10 s)",
    )
    # The worker reads its own settings (trainer/worker.py: TRAINLENS_WORKER_SLOTS, ...);
    # serve reads this one too, to wait for its embedded worker's runs to stop.
    stop_grace_seconds: float = Field(default=10.0, gt=0)
    gpu_name: str | None = Field(
        default=None,
        description="the GPU the workers train on (e.g. 'H100'): launches are checked "
        "against its memory; unset, cuda runs are checked against the largest known GPU",
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
    # Comma-separated in the environment.
    webhook_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="URL prefixes webhooks may be sent to (rules_webhook_url is always allowed)",
    )
    webhook_allow_private: bool = Field(
        default=False, description="let webhooks reach private, loopback and link-local addresses"
    )
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    rules: RuleSettings = Field(  # type: ignore[valid-type]
        default_factory=RuleSettings, description="thresholds of every rule, by rule code"
    )

    @field_validator("token", "worker_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: Any) -> Any:
        # Compose and shells pass unset variables as "": that must mean "no token", not
        # a token nobody can type.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("allowed_hosts", "webhook_allowlist", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def effective_allowed_hosts(self) -> list[str]:
        hosts = ["localhost", "127.0.0.1", "[::1]"]
        configured = self.host.lower()
        if configured not in ("0.0.0.0", "::", ""):
            hosts.append(f"[{configured}]" if ":" in configured else configured)
        hosts += [host.lower().rstrip(".") for host in self.allowed_hosts]
        return list(dict.fromkeys(hosts))

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def run_file_bytes(self) -> int:
        return self.run_file_max_mb * 1024 * 1024

    @property
    def dataset_body_bytes(self) -> int:
        # JSON escaping can double a corpus (newlines become two bytes), plus slack.
        return 2 * self.dataset_max_mb * 1024 * 1024 + 1024 * 1024

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
