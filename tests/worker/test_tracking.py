"""The tracking client for people's own scripts."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import LiveServer
from trainer.tracking import Run


def test_a_script_logs_and_finishes(live_server: LiveServer) -> None:
    with Run.create(live_server.url, name="my script", config={"vocab_size": 65}) as run:
        for step in range(50):
            run.log(step, {"train/loss": 4.0 - step * 0.01, "train/grad_norm": 1.0})
        run.sample(49, "To be or not")
    detail = httpx.get(f"{live_server.url}/api/runs/{run.id}").json()
    assert detail["status"] == "completed" and detail["source"] == "external"
    assert detail["config"] == {"vocab_size": 65}
    assert detail["last_step"] == 49
    assert detail["latest"]["train/loss"]["value"] == pytest.approx(3.51)


def test_an_exception_marks_the_run_failed(live_server: LiveServer) -> None:
    with pytest.raises(ZeroDivisionError):
        with Run.create(live_server.url, name="broken") as run:
            run.log(0, {"train/loss": 1.0})
            1 / 0  # noqa: B018
    detail = httpx.get(f"{live_server.url}/api/runs/{run.id}").json()
    assert detail["status"] == "failed" and "ZeroDivisionError" in detail["error"]
    assert detail["last_step"] == 0
