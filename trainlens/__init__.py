"""trainlens: log any training script to a trainlens server, the way you log to wandb.

    import trainlens

    run = trainlens.init(name="gpt2-small", config={"lr": 6e-4, "vocab_size": 50257})
    for step in range(max_steps):
        ...
        run.log({"train/loss": loss, "train/grad_norm": grad_norm, "train/lr": lr}, step=step)
    run.finish()

    trainlens.history(run.id, ["train/loss"]).columns["train/loss"]  # every point, read back

The server comes from `url=` or TRAINLENS_URL (default http://127.0.0.1:8000), the token
from `token=` or TRAINLENS_TOKEN. When the server cannot be reached the run logs
offline to ./trainlens-runs/ (TRAINLENS_OFFLINE_DIR); `trainlens sync PATH` uploads it.

Importing this package needs only httpx and the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainlens.client import Run, current, set_current, start
from trainlens.reader import History, history
from trainlens.settings import ClientSettings

__all__ = ["History", "Run", "finish", "history", "init", "log", "run"]

run: Run | None = None
"""The run started last by `init()` and not yet finished."""


def init(
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    url: str | None = None,
    token: str | None = None,
    **options: Any,
) -> Run:
    """Start a run and make it the current one (finishing any run still open).

    Options (else TRAINLENS_<NAME> environment variables): mode ("auto" or "offline"),
    offline_dir, finish_timeout, flush_interval, batch_rows, max_buffer_rows,
    http_timeout, init_timeout, retry_max_seconds, heartbeat_interval, system_metrics,
    system_interval."""
    global run
    settings = ClientSettings.resolve(url=url, token=token, **options)
    previous = current()
    if previous is not None:
        previous.finish()
    run = start(name, config, settings)
    set_current(run)
    return run


def log(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """`run.log(...)` on the current run."""
    _require().log(metrics, step)


def finish(exit_code: int | None = None, status: str | None = None) -> None:
    """`run.finish(...)` on the current run (nothing when none is open)."""
    open_run = current()
    if open_run is not None:
        open_run.finish(exit_code=exit_code, status=status)


def _require() -> Run:
    open_run = current()
    if open_run is None:
        raise RuntimeError("no run is open: call trainlens.init() first")
    return open_run
