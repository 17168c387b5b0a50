"""`trainlens import tensorboard LOGDIR`, end to end: event files written by torch's own
`SummaryWriter`, imported by the real command into a live server, read back exactly,
and diagnosed by the rule engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tensorboard.summary import Writer as TensorTensorWriter
from torch.utils.tensorboard import SummaryWriter

from tests.client.conftest import run_detail, series, trainlens_cli, wait_for
from tests.conftest import ROOT, LiveServer
from tests.rules.helpers import noisy_decay

HEALTHY_STEPS = 1_500  # more than TensorBoard's default 1,000-point sample per tag
SPIKE_STEP = 250


def _as_logged(values: np.ndarray) -> list[float]:
    """What an event file holds: scalars are float32."""
    return [float(np.float32(value)) for value in values]


def _write_logs(logdir: Path) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """Three runs, in the tag styles and formats of three tools, and what each tag
    should become."""
    healthy = noisy_decay(HEALTHY_STEPS, seed=1)
    lr = np.linspace(1e-4, 6e-4, HEALTHY_STEPS)
    with SummaryWriter(str(logdir / "exp1")) as writer:
        for step in range(HEALTHY_STEPS):
            writer.add_scalar("loss", healthy[step], step)
            writer.add_scalar("learning_rate", lr[step], step)
            if step % 100 == 0:
                writer.add_scalar("eval acc", 0.5, step)  # a name the server refuses
        writer.add_histogram("weights", np.arange(10.0), 0)  # not a scalar: left out
        writer.add_hparams({"lr": 6e-4}, {})  # a subfolder with no scalars: no run
    spiky = noisy_decay(400, seed=2)
    spiky[SPIKE_STEP : SPIKE_STEP + 4] = [5.0, 4.0, 3.0, 2.6]  # a bad batch, then recovery
    eval_steps = list(range(0, 400, 50))
    with SummaryWriter(str(logdir / "sweep" / "exp2")) as writer:
        for step in range(400):
            writer.add_scalar("train/loss", spiky[step], step)
            writer.add_scalar("grad_norm", 1.0, step)
            if step in eval_steps:
                writer.add_scalar("eval/loss", spiky[step] + 0.1, step)
                writer.add_scalar("custom/thing", step / 10, step)
    # TF2/Keras write scalars as tensors, not simple values: tensorboard's own writer does too
    hf_style = np.linspace(3.0, 2.0, 100)
    writer = TensorTensorWriter(str(logdir / "tf2"))
    for step in range(100):
        writer.add_scalar("train/loss", hf_style[step], step)
        writer.add_scalar("train/learning_rate", 1e-3, step)
    writer.close()
    everything = list(range(HEALTHY_STEPS))
    return {
        "exp1": {
            "train/loss": (everything, _as_logged(healthy)),
            "train/lr": (everything, _as_logged(lr)),
            "eval_acc": (list(range(0, HEALTHY_STEPS, 100)), [0.5] * 15),
        },
        "sweep/exp2": {
            "train/loss": (list(range(400)), _as_logged(spiky)),
            "train/grad_norm": (list(range(400)), [1.0] * 400),
            "val/loss": (eval_steps, _as_logged(spiky[eval_steps] + 0.1)),
            "custom/thing": (eval_steps, _as_logged(np.array(eval_steps) / 10)),
        },
        "tf2": {
            "train/loss": (list(range(100)), _as_logged(hf_style)),
            "train/lr": (list(range(100)), _as_logged(np.full(100, 1e-3))),
        },
    }


def _import(logdir: Path, url: str) -> dict[str, int]:
    """Run the command as a user would; the run id of each name it printed."""
    done = trainlens_cli("import", "tensorboard", str(logdir), env={"TRAINLENS_URL": url})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("no scalars, skipped") == 1
    imported = {}
    for line in done.stdout.splitlines():
        name, _, rest = line.partition(":")
        if rest == " no scalars, skipped":
            assert name.startswith("exp1/"), line  # add_hparams's folder
            continue
        assert f"{url}/run.html?id=" in rest, line
        imported[name] = int(rest.split("run.html?id=")[1].split()[0])
    return imported


def _event_file(folder: Path) -> str:
    (path,) = folder.glob("*tfevents*")
    return path.name


def _finding(server: LiveServer, run_id: int, code: str) -> dict[str, Any] | None:
    findings = httpx.get(f"{server.url}/api/runs/{run_id}/findings").json()
    return next((finding for finding in findings if finding["code"] == code), None)


def test_every_point_arrives_under_canonical_keys_and_the_spike_becomes_a_finding(
    live_server, tmp_path: Path
) -> None:
    logdir = tmp_path / "tb"
    expected = _write_logs(logdir)

    runs = _import(logdir, live_server.url)
    assert sorted(runs) == ["exp1", "sweep/exp2", "tf2"]
    for name, keys in expected.items():
        detail = run_detail(live_server, runs[name])
        assert detail["name"] == name and detail["source"] == "external"
        assert detail["status"] == "completed"
        assert sorted(detail["keys"]) == sorted(keys)  # mapped; histogram left out
        for key, (steps, values) in keys.items():
            assert series(live_server, runs[name], key) == (steps, values), (name, key)

    finding = wait_for(
        lambda: _finding(live_server, runs["sweep/exp2"], "loss_spike"), 30, "a loss_spike"
    )
    assert finding["first_step"] == SPIKE_STEP
    assert finding["evidence"]["value"] == 5.0


def test_importing_again_reuses_each_run_completes_it_and_fills_in_what_was_added(
    live_server, tmp_path: Path
) -> None:
    logdir = tmp_path / "tb"
    expected = _write_logs(logdir)
    # an import cut short: it had made exp1's run and sent a point, then its data stopped
    origin = {"format": "tensorboard", "event_files": [_event_file(logdir / "exp1")]}
    body = {"name": "exp1", "source": "external", "config": {"imported_from": origin}}
    cut = httpx.post(f"{live_server.url}/api/runs", json=body).json()["id"]
    httpx.post(
        f"{live_server.url}/api/runs/{cut}/metrics",
        json={"rows": [{"step": 0, "metrics": {"train/loss": 9.0}}]},
    ).raise_for_status()
    httpx.post(f"{live_server.url}/api/runs/{cut}/finish", json={"status": "crashed"})
    first = _import(logdir, live_server.url)
    assert first["exp1"] == cut and run_detail(live_server, cut)["status"] == "completed"

    # the run went on after the first import: a restarted writer, a second event file
    with SummaryWriter(str(logdir / "exp1")) as writer:
        for step in range(HEALTHY_STEPS, HEALTHY_STEPS + 10):
            writer.add_scalar("loss", 1.5, step)
    again = _import(logdir, live_server.url)

    assert again == first
    listed = httpx.get(f"{live_server.url}/api/runs", params={"limit": 100}).json()
    assert listed["total"] == 3
    steps, values = series(live_server, first["exp1"], "train/loss")
    assert steps == list(range(HEALTHY_STEPS + 10))
    assert values == expected["exp1"]["train/loss"][1] + [1.5] * 10
    assert (
        series(live_server, first["sweep/exp2"], "val/loss") == (expected["sweep/exp2"]["val/loss"])
    )


def test_tensorboard_and_the_frameworks_load_only_when_used() -> None:
    code = (
        "import sys, trainlens, trainlens.cli, trainlens.tensorboard_import, "
        "trainlens.integrations.keys; "
        "print(sorted(m for m in ('tensorboard', 'torch', 'transformers', 'lightning') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
