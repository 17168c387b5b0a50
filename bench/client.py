"""Client benchmark: what `run.log()` of a 35-key row costs the training thread (p50,
p99, max over 20,000 calls), side by side with wandb (offline mode) and
`mlflow.log_metrics` when those are importable; and the overhead of logging on a small
real CPU training loop, with and without `run.log()`, interleaved, medians.

    python -m bench.client [--calls 20000] [--keys 35] [--pace-ms 0.2] [--only latency|loop]

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


NULL_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"id": 1, "created_at": 0.0}'
        self.send_response(201 if self.path == "/api/runs" else 200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@contextlib.contextmanager
def null_server() -> Iterator[str]:
    """A server that takes every request and stores nothing: the client's whole cost
    (encoding, HTTP), none of the server's (ingest, rule engine) on this machine."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-c", NULL_SERVER, str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                httpx.post(f"{url}/ping", timeout=1)
                break
            time.sleep(0.05)
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


def checks_alone() -> tuple[LogCall, Callable[[], None]]:
    """log()'s own work (validate, enqueue) with no background thread and no server:
    what this machine's scheduler alone does to the tail of a call that long."""
    from collections import deque

    from trainlens.wire import check_metrics

    known: set[str] = set()
    queue: deque[tuple[int, dict[str, float]]] = deque(maxlen=10_000)

    def log(row: dict[str, float], step: int) -> None:
        queue.append((step, check_metrics(row, known)))

    return log, queue.clear


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
                ("same checks, no threads (noise)", checks_alone),
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
    the same 35 values (computed in both), so drift and noise hit both alike. Online,
    the server runs on the same machine (ingest and rule engine included); offline,
    every row goes to the journal."""
    for where in ("live server on this machine", "discarding server", "offline journal"):
        _loop_overhead(blocks, steps_per_block, keys, where)


def _loop_overhead(blocks: int, steps_per_block: int, keys: int, where: str) -> None:
    import torch

    import trainlens

    torch.manual_seed(0)
    torch.set_num_threads(1)  # steadier step times on a shared machine
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs, targets = torch.randn(64, 256), torch.randn(64, 256)
    names = row_names(keys)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        servers = {
            "live server on this machine": lambda: live_server(tmp),
            "discarding server": null_server,
            "offline journal": lambda: contextlib.nullcontext(None),
        }
        with servers[where]() as url:
            mode = "offline" if url is None else "auto"
            run = trainlens.init("loop", url=url, offline_dir=tmp / "runs", mode=mode)
            step = 0
            walls: dict[bool, list[float]] = {True: [], False: []}
            cpus: dict[bool, list[float]] = {True: [], False: []}
            for block in range(blocks * 2):
                # on, off, off, on, on, off, ...: a slow drift hits both sides alike
                logging_on = (block + block // 2) % 2 == 0
                started, started_cpu = time.perf_counter(), time.process_time()
                for _ in range(steps_per_block):
                    loss = torch.nn.functional.mse_loss(model(inputs), targets)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    value = loss.item()
                    row = {name: value for name in names}
                    if logging_on:
                        run.log(row, step=step)
                    step += 1
                if logging_on:
                    run.flush()  # the block pays for sending its own rows
                # per step, wall clock and the process's CPU time (all threads; CPU time
                # is what other programs on a shared machine cannot inflate)
                walls[logging_on].append((time.perf_counter() - started) / steps_per_block)
                cpus[logging_on].append((time.process_time() - started_cpu) / steps_per_block)
            run.finish()

    def overhead(times: dict[bool, list[float]]) -> str:
        ratios = [on / off for on, off in zip(times[True], times[False], strict=True)]
        return (
            f"{statistics.median(times[False]) * 1e3:.2f} -> "
            f"{statistics.median(times[True]) * 1e3:.2f} ms "
            f"({100 * (statistics.median(ratios) - 1):+.1f}%)"
        )

    print(
        f"training loop, {where} ({blocks} x {steps_per_block} steps each way, "
        f"interleaved; medians of paired blocks): wall {overhead(walls)}, "
        f"CPU {overhead(cpus)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=35)
    parser.add_argument("--pace-ms", type=float, default=0.2)
    parser.add_argument("--loop-blocks", type=int, default=12)
    parser.add_argument("--only", choices=["latency", "loop"], help="run one part")
    # 1,000 steps (about 1.5 s here): the sender posts every 0.5 s; a block of a few
    # hundred milliseconds would mostly time the synchronous flush at its end, which a
    # training loop pays once, at finish(). `--loop-steps 100` shows that cost.
    parser.add_argument("--loop-steps", type=int, default=1_000, help="steps per block")
    parser.add_argument(
        "--peers",
        default=os.environ.get("TRAINLENS_BENCH_PEERS"),
        help="a folder holding wandb and mlflow (pip install --target)",
    )
    args = parser.parse_args()
    if args.peers:
        sys.path.append(args.peers)
    if args.only != "loop":
        latency_table(args.calls, args.keys, args.pace_ms / 1000)
    if args.only != "latency":
        loop_overhead(args.loop_blocks, args.loop_steps, args.keys)


if __name__ == "__main__":
    main()
