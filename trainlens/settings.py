"""The client's settings: keyword arguments of `trainlens.init`, else TRAINLENS_*
environment variables, else these defaults."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass
class ClientSettings:
    url: str = DEFAULT_URL
    token: str | None = None
    # "auto": online when the server answers at init, else offline; "offline": never ask
    mode: str = "auto"
    offline_dir: Path = field(default_factory=lambda: Path("trainlens-runs"))
    # seconds finish() waits for unsent rows before leaving them in the journal
    finish_timeout: float = 30.0
    # how often the background thread posts what was logged
    flush_interval: float = 0.5
    batch_rows: int = 2_000
    # rows kept in memory while the server is slow or away; beyond this they go to disk
    max_buffer_rows: int = 10_000
    http_timeout: float = 10.0
    init_timeout: float = 10.0
    # longest wait between two attempts while the server is away
    retry_max_seconds: float = 30.0
    heartbeat_interval: float = 10.0
    system_metrics: bool = True
    system_interval: float = 10.0

    @classmethod
    def resolve(cls, **given: Any) -> ClientSettings:
        """Keyword arguments (None means "not given") over environment over defaults."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(names)}")
        values: dict[str, Any] = {}
        for name, spec in names.items():
            value = given.get(name)
            if value is None:
                value = os.environ.get(f"TRAINLENS_{name.upper()}") or None
            if value is None:
                continue
            values[name] = _convert(name, spec.type, value)
        settings = cls(**values)
        settings.url = settings.url.rstrip("/")
        if settings.mode not in ("auto", "offline"):
            raise ValueError(f"mode must be 'auto' or 'offline', not {settings.mode!r}")
        return settings


def _convert(name: str, kind: Any, value: Any) -> Any:
    kind = str(kind)
    try:
        if kind == "bool":
            if isinstance(value, str):
                return value.strip().lower() not in ("0", "false", "no", "off", "")
            return bool(value)
        if kind == "float":
            return float(value)
        if kind == "int":
            return int(value)
        if kind == "Path":
            return Path(value)
    except ValueError:
        raise ValueError(f"{name}: cannot read {value!r} as {kind}") from None
    return str(value)
