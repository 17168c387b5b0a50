"""Client benchmark: what `run.log()` of a 35-key row costs the training thread (p50,
p99, max over 20,000 calls), side by side with wandb (offline mode) and
`mlflow.log_metrics` when those are importable; and the overhead of logging on a small
real CPU training loop, with and without `run.log()`, interleaved, medians.

    python -m bench.client [--calls 20000] [--keys 35] [--pace-ms 0.2] [--loop-blocks 30]

wandb and mlflow are not project dependencies: install them apart and name the folder
(appended to sys.path, so the project's own packages keep precedence):
    pip install --target /tmp/peers wandb mlflow-skinny
    python -m bench.client --peers /tmp/peers      (or TRAINLENS_BENCH_PEERS=/tmp/peers)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
LogCall = Callable[[dict[str, float], int], None]


@contextlib.contextmanager
def live_server(tmp: Path) -> Iterator[str]:
    """`trainlens serve` on a fresh SQLite database, as a user would run it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "TRAINLENS_DATA_DIR": str(tmp / "data"),
        "TRAINLENS_PORT": str(port),
        "TRAINLENS_AUTO_MIGRATE": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(15)


def row_names(keys: int) -> list[str]:
    return [f"layer{i // 5}/stat{i % 5}" for i in range(keys)]


def time_calls(log: LogCall, calls: int, keys: int, pace_seconds: float) -> list[float]:
    """Microseconds per call; a pause between calls stands for the training step (it
    releases the GIL, as torch's kernels do), so background threads run meanwhile."""
    names = row_names(keys)
    costs = []
    for step in range(calls):
        row = {name: 1.0 + step * 1e-6 for name in names}
        before = time.perf_counter()
        log(row, step)
        costs.append((time.perf_counter() - before) * 1e6)
        if pace_seconds:
            time.sleep(pace_seconds)
    return costs


def trainlens_logger(url: str | None, tmp: Path) -> tuple[LogCall, Callable[[], None]]:
    import trainlens

    options: dict[str, Any] = {"offline_dir": tmp / "trainlens-runs"}
    if url is None:
        options["mode"] = "offline"
    run = trainlens.init("bench", {"bench": True}, url=url, **options)
    return (lambda row, step: run.log(row, step=step)), run.finish


def wandb_logger(tmp: Path) -> tuple[LogCall, Callable[[], None]] | None:
    try:
        import wandb
    except ImportError:
        return None
    run = wandb.init(
        project="bench", mode="offline", dir=str(tmp), settings=wandb.Settings(silent=True)
    )
    return (lambda row, step: run.log(row, step=step)), run.finish


def mlflow_logger(tmp: Path) -> tuple[LogCall, Callable[[], None]] | None:
    try:
        import mlflow
    except ImportError:
        return None
    # The local file store: its sqlite store takes ~90 ms a call here, too slow for 20,000.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri((tmp / "mlruns").as_uri())
    mlflow.start_run()
    return (lambda row, step: mlflow.log_metrics(row, step=step)), mlflow.end_run


def _done() -> None:
    pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_table(calls: int, keys: int, pace_seconds: float) -> None:
    pace = f"{pace_seconds * 1e3:.1f} ms"
    print(f"run.log() of a {keys}-key row, {calls} calls, {pace} between calls")
    print(f"{'client':<34} {'p50 µs':>9} {'p99 µs':>9} {'max µs':>10} {'finish s':>9}")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        with live_server(tmp) as url:
            candidates: list[tuple[str, Callable[[], Any]]] = [
                ("no-op call (this machine's noise)", lambda: (lambda row, step: None, _done)),
                ("trainlens (online, live server)", lambda: trainlens_logger(url, tmp)),
                ("trainlens (offline journal)", lambda: trainlens_logger(None, tmp)),
                ("wandb (mode=offline)", lambda: wandb_logger(tmp)),
                ("mlflow.log_metrics (file store)", lambda: mlflow_logger(tmp)),
            ]
            for label, make in candidates:
                made = make()
                if made is None:
                    print(f"{label:<34} {'not installed: skipped':>30}")
                    continue
                log, finish = made
                costs = time_calls(log, calls, keys, pace_seconds)
                started = time.perf_counter()
                finish()
                took = time.perf_counter() - started
                print(
                    f"{label:<34} {statistics.median(costs):>9.1f} "
                    f"{percentile(costs, 0.99):>9.1f} {max(costs):>10.0f} {took:>9.2f}",
                    flush=True,
                )


def loop_overhead(blocks: int, steps_per_block: int, keys: int) -> None:
    """A small MLP trained on CPU; blocks of steps alternate with and without logging
    the same 35 values (computed in both), so drift and noise hit both alike."""
    import torch

    import trainlens

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs, targets = torch.randn(64, 256), torch.randn(64, 256)
    names = row_names(keys)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        with live_server(tmp) as url:
            run = trainlens.init("loop", url=url, offline_dir=tmp / "runs")
            step = 0
            times: dict[bool, list[float]] = {True: [], False: []}
            for block in range(blocks * 2):
                logging_on = block % 2 == 0
                for _ in range(steps_per_block):
                    started = time.perf_counter()
                    loss = torch.nn.functional.mse_loss(model(inputs), targets)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    value = loss.item()
                    row = {name: value for name in names}
                    if logging_on:
                        run.log(row, step=step)
                    times[logging_on].append(time.perf_counter() - started)
                    step += 1
            run.finish()
    with_log = statistics.median(times[True]) * 1e3
    without = statistics.median(times[False]) * 1e3
    print(
        f"training loop ({blocks * steps_per_block} steps each way, interleaved): "
        f"median step {without:.3f} ms without logging, {with_log:.3f} ms with; "
        f"overhead {100 * (with_log / without - 1):+.2f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=35)
    parser.add_argument("--pace-ms", type=float, default=0.2)
    parser.add_argument("--loop-blocks", type=int, default=30)
    parser.add_argument("--loop-steps", type=int, default=50, help="steps per block")
    parser.add_argument(
        "--peers",
        default=os.environ.get("TRAINLENS_BENCH_PEERS"),
        help="a folder holding wandb and mlflow (pip install --target)",
    )
    args = parser.parse_args()
    if args.peers:
        sys.path.append(args.peers)
    latency_table(args.calls, args.keys, args.pace_ms / 1000)
    loop_overhead(args.loop_blocks, args.loop_steps, args.keys)


if __name__ == "__main__":
    main()
