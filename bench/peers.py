"""Peer comparison (optional): the same series written and read back by trainlens and by
whichever peers are importable here: TensorBoard (event file + EventAccumulator), MLflow
(SQLite tracking store), wandb (offline writes). It installs nothing; an absent peer is
reported as skipped. Install peers in a separate environment to compare with them.

    python -m bench.peers [--points 200000]

Columns: write seconds, full read-back seconds (or "-" where the peer has no reader
here), and spikes kept (of 5) in the peer's default downsampled view.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

Result = tuple[float, float | None, str]


def _series(points: int) -> tuple[np.ndarray, dict[int, float]]:
    values = 3.0 + 0.05 * np.random.default_rng(0).standard_normal(points)
    spikes = {int(points * f) + 3: 40.0 + i for i, f in enumerate((0.1, 0.3, 0.5, 0.7, 0.9))}
    for step, value in spikes.items():
        values[step] = value
    return values, spikes


def trainlens(values: np.ndarray, spikes: dict[int, float], tmp: Path) -> Result:
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.db import Database
    from app.main import create_app
    from app.metrics.store import MetricRow, MetricStore
    from app.migrations import upgrade_to_head
    from app.models import Run

    url = f"sqlite:///{tmp}/trainlens.db"
    upgrade_to_head(url)
    db = Database(url)
    with db.session(write=True) as session:
        run = Run(name="peers", source="external", status="completed", config={})
        session.add(run)
        session.flush()
        run_id = run.id
    store = MetricStore(db)
    started = time.perf_counter()
    for lo in range(0, len(values), 10_000):
        chunk = values[lo : lo + 10_000].tolist()
        store.write(run_id, [MetricRow(lo + i, {"loss": v}, 1.7e9) for i, v in enumerate(chunk)])
    write = time.perf_counter() - started
    db.dispose()
    settings = Settings(
        data_dir=tmp / "data",
        database_url=url,
        embedded_worker=False,
        rules_enabled=False,
        allowed_hosts=["testserver"],  # the Host header Starlette's TestClient sends
    )
    with TestClient(create_app(settings)) as client:
        started = time.perf_counter()
        export = client.get(f"/api/runs/{run_id}/metrics.parquet")
        read = time.perf_counter() - started
        export.raise_for_status()
        size = len(export.content)
        response = client.get(f"/api/runs/{run_id}/metrics", params={"keys": "loss"})
        response.raise_for_status()
        view = response.json()
    assert size > 0
    kept = dict(zip(view["series"]["loss"]["steps"], view["series"]["loss"]["values"], strict=True))
    return write, read, f"{sum(kept.get(s) == v for s, v in spikes.items())}/5"


def tensorboard(values: np.ndarray, spikes: dict[int, float], tmp: Path) -> Result:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    started = time.perf_counter()
    writer = SummaryWriter(str(tmp / "tb"))
    for step, value in enumerate(values.tolist()):
        writer.add_scalar("loss", value, step)
    writer.close()
    write = time.perf_counter() - started
    started = time.perf_counter()
    full = EventAccumulator(str(tmp / "tb"), size_guidance={"scalars": 0})
    full.Reload()
    assert len(full.Scalars("loss")) == len(values)
    read = time.perf_counter() - started
    default = EventAccumulator(str(tmp / "tb"))  # TensorBoard's own view: a reservoir sample
    default.Reload()
    kept = {event.step: event.value for event in default.Scalars("loss")}
    return write, read, f"{sum(abs(kept.get(s, 0) - v) < 1e-3 for s, v in spikes.items())}/5"


def mlflow(values: np.ndarray, spikes: dict[int, float], tmp: Path) -> Result:
    import mlflow as mlflow_module
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    run = client.create_run(client.create_experiment("peers"))
    started = time.perf_counter()
    for lo in range(0, len(values), 1_000):  # log_batch's limit
        chunk = values[lo : lo + 1_000].tolist()
        client.log_batch(
            run.info.run_id, metrics=[Metric("loss", v, 0, lo + i) for i, v in enumerate(chunk)]
        )
    write = time.perf_counter() - started
    started = time.perf_counter()
    history = client.get_metric_history(run.info.run_id, "loss")
    read = time.perf_counter() - started
    assert len(history) == len(values) and mlflow_module is not None
    return write, read, "n/a"


def wandb(values: np.ndarray, spikes: dict[int, float], tmp: Path) -> Result:
    import wandb as wandb_module

    run = wandb_module.init(mode="offline", dir=str(tmp), project="peers")
    started = time.perf_counter()
    for step, value in enumerate(values.tolist()):
        run.log({"loss": value}, step=step)
    run.finish()
    return time.perf_counter() - started, None, "n/a"


PEERS: dict[str, tuple[str, Callable[[np.ndarray, dict[int, float], Path], Result]]] = {
    "trainlens": ("fastapi", trainlens),
    "tensorboard": ("tensorboard", tensorboard),  # its SummaryWriter here is torch's
    "mlflow": ("mlflow", mlflow),
    "wandb offline": ("wandb", wandb),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=200_000)
    args = parser.parse_args()
    values, spikes = _series(args.points)
    print(f"{args.points:,} points of one series")
    print(f"{'':14} {'write s':>8} {'read-all s':>10} {'spikes in default view':>23}")
    for name, (module, measure) in PEERS.items():
        if importlib.util.find_spec(module) is None:
            print(f"{name:14} skipped: {module} is not installed here")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            write, read, spikes_kept = measure(values, spikes, Path(tmp))
        read_text = "-" if read is None else f"{read:.2f}"
        print(f"{name:14} {write:>8.2f} {read_text:>10} {spikes_kept:>23}")


if __name__ == "__main__":
    main()
