"""`import trainlens` as a user's script uses it: init, log, finish, context manager."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import trainlens
from tests.client.conftest import all_runs, run_detail, series, trainlens_cli
from tests.conftest import ROOT, LiveServer


def test_a_script_logs_and_finishes(live_server: LiveServer, tmp_path: Path) -> None:
    config = {"vocab_size": 65, "lr": 1e-3}
    with trainlens.init("my script", config, url=live_server.url, offline_dir=tmp_path) as run:
        assert trainlens.run is run and run.id is not None
        for step in range(50):
            run.log({"train/loss": 4.0 - step * 0.01, "train/grad_norm": 1.0}, step=step)
        run.log({"val/loss": 3.7}, step=49)  # a step logged in two calls
        run.sample(49, "To be or not")
    assert trainlens.run is None
    detail = run_detail(live_server, run.id)
    assert detail["status"] == "completed" and detail["source"] == "external"
    assert detail["config"] == config and run.config == config
    assert detail["last_step"] == 49
    assert detail["latest"]["train/loss"]["value"] == pytest.approx(3.51)
    assert detail["latest"]["val/loss"]["value"] == pytest.approx(3.7)
    assert run.summary["train/loss"] == pytest.approx(3.51) and run.summary["val/loss"] == 3.7
    assert run.url == f"{live_server.url}/run.html?id={run.id}"
    assert run.errors == []
    assert not run.folder.exists()  # nothing needed the journal


def test_steps_auto_increment_and_values_of_every_kind(
    live_server: LiveServer, tmp_path: Path
) -> None:
    numpy = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    run = trainlens.init(url=live_server.url, offline_dir=tmp_path)
    trainlens.log({"a": 1})
    trainlens.log({"a": numpy.float32(2.5)})
    trainlens.log({"a": torch.tensor(3.0)})
    trainlens.log({"a": "NaN"})
    trainlens.log({"a": math.inf}, step=10)
    trainlens.log({"a": numpy.int64(6)})  # step 11
    trainlens.finish()
    steps, values = series(live_server, run.id, "a")
    assert steps == [0, 1, 2, 3, 10, 11]
    assert values == [1.0, 2.5, 3.0, "NaN", "Infinity", 6.0]
    assert run_detail(live_server, run.id)["status"] == "completed"


def test_an_exception_marks_the_run_failed(live_server: LiveServer, tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        with trainlens.init("broken", url=live_server.url, offline_dir=tmp_path) as run:
            run.log({"train/loss": 1.0})
            1 / 0  # noqa: B018
    detail = run_detail(live_server, run.id)
    assert detail["status"] == "failed" and "ZeroDivisionError" in detail["error"]
    assert detail["last_step"] == 0


@pytest.mark.parametrize(
    ("row", "error", "named"),
    [
        ({"eval acc": 1.0}, ValueError, "eval acc"),
        ({"a,b": 1.0}, ValueError, "a,b"),
        ({"": 1.0}, ValueError, "''"),
        ({"x" * 256: 1.0}, ValueError, "xxx"),
        ({"val/acc": None}, TypeError, "val/acc"),
        ({"flag": True}, TypeError, "flag"),
        ({"loss": "3.1"}, ValueError, "loss"),
        ({"loss": [1.0, 2.0]}, TypeError, "loss"),
        ({"loss": 10**400}, ValueError, "loss"),
        ({}, ValueError, "at least one"),
    ],
)
def test_a_bad_key_or_value_fails_in_the_caller(
    tmp_path: Path, row: dict[str, object], error: type[Exception], named: str
) -> None:
    run = trainlens.init(mode="offline", offline_dir=tmp_path, system_metrics=False)
    run.log({"ok": 1.0}, step=0)
    with pytest.raises(error, match=named.replace("(", r"\(")):
        run.log(row, step=1)
    run.log({"ok": 2.0}, step=2)
    run.finish()
    lines = (run.folder / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the bad row left nothing behind


def test_a_bad_step_fails_in_the_caller(tmp_path: Path) -> None:
    run = trainlens.init(mode="offline", offline_dir=tmp_path, system_metrics=False)
    with pytest.raises(ValueError, match="step"):
        run.log({"a": 1.0}, step=-1)
    with pytest.raises(TypeError, match="step"):
        run.log({"a": 1.0}, step=1.5)  # type: ignore[arg-type]
    run.finish()


SCRIPT_ENDS = """
import sys, trainlens
trainlens.init(sys.argv[1], url=sys.argv[2], offline_dir=sys.argv[3], system_metrics=False)
trainlens.log({"train/loss": 2.0}, step=0)
if sys.argv[1] == "raises":
    raise ValueError("bad batch")
"""


def test_a_script_that_never_calls_finish_still_ends_its_run(
    live_server: LiveServer, tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT_ENDS)
    outcomes = {}
    for name in ("returns", "raises"):
        result = subprocess.run(
            [sys.executable, str(script), name, live_server.url, str(tmp_path / "runs")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        outcomes[name] = result.returncode
    assert outcomes == {"returns": 0, "raises": 1}  # the script's own exit status stands
    runs = {run["name"]: run for run in all_runs(live_server)}
    assert runs["returns"]["status"] == "completed"
    assert runs["raises"]["status"] == "failed"
    assert "ValueError: bad batch" in run_detail(live_server, runs["raises"]["id"])["error"]


def test_a_token_protected_server(tmp_path: Path, sqlite_url: str) -> None:
    server = LiveServer(tmp_path / "live", sqlite_url, extra_env={"TRAINLENS_TOKEN": "s3cret"})
    try:
        server.wait_ready()
        with pytest.raises(PermissionError, match="token"):
            trainlens.init(url=server.url, token="wrong", offline_dir=tmp_path)
        offline = trainlens.init("later", mode="offline", offline_dir=tmp_path / "runs")
        offline.log({"a": 1.0})
        offline.finish()
        with trainlens.init(url=server.url, token="s3cret", offline_dir=tmp_path) as run:
            run.log({"a": 1.0}, step=0)
        headers = {"Authorization": "Bearer s3cret"}
        detail = httpx.get(f"{server.url}/api/runs/{run.id}", headers=headers).json()
        assert detail["status"] == "completed" and detail["last_step"] == 0
        env = {"TRAINLENS_URL": server.url, "TRAINLENS_TOKEN": "s3cret"}
        result = trainlens_cli("sync", str(tmp_path / "runs"), env=env)
        assert result.returncode == 0, result.stderr
    finally:
        server.stop()
