"""A client for people's own training scripts: log to a trainlens server over REST.

    from trainer.tracking import Run

    config = {"vocab_size": 50257, "lr": 6e-4}
    with Run.create("http://127.0.0.1:8000", name="gpt2-small", config=config) as run:
        for step in range(max_steps):
            ...
            run.log(step, {"train/loss": loss, "train/grad_norm": grad_norm, "train/lr": lr})

`log()` never waits on the network: rows are batched and posted from a background
thread (every 0.5 s or 1,000 rows), retried on failure, and never duplicated. The run
is finished as completed when the block ends, as failed (with the error) when it raises.
Torch-free; needs only httpx.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from trainer.sink import HttpSink


class Run:
    def __init__(self, api_url: str, run_id: int, token: str | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.id = run_id
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._sink = HttpSink(self.api_url, run_id, token=token)
        self._finished = False

    @classmethod
    def create(
        cls,
        api_url: str = "http://127.0.0.1:8000",
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        token: str | None = None,
    ) -> Run:
        """Open a new external run. Put what the rule engine can use in `config`:
        vocab_size, grad_clip, warmup_steps, max_steps, schedule, lr, min_lr."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"name": name, "source": "external", "config": dict(config or {})}
        response = httpx.post(f"{api_url.rstrip('/')}/api/runs", json=body, headers=headers)
        response.raise_for_status()
        return cls(api_url, int(response.json()["id"]), token)

    def log(self, step: int, metrics: Mapping[str, float], wall_time: float | None = None) -> None:
        """Record one step's metrics (floats; NaN and infinities are fine)."""
        self._sink.log(step, metrics, wall_time)

    def sample(self, step: int, text: str) -> None:
        self._sink.sample(step, text)

    def flush(self) -> None:
        """Wait until everything logged so far has reached the server."""
        self._sink.flush()

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        self._sink.close()
        response = httpx.post(
            f"{self.api_url}/api/runs/{self.id}/finish",
            json={"status": status, "error": error},
            headers=self._headers,
        )
        response.raise_for_status()

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if error is None:
            self.finish("completed")
        else:
            text = "".join(traceback.format_exception(kind, error, trace))
            self.finish("failed", text[-10_000:])
