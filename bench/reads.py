"""Read benchmark on a 1,000,000-point series (SQLite) with five one-step spikes:

- cold: the first 1M -> 2,000-point query of a fresh server process (server time from
  the Server-Timing header), full range and a zoomed range, median over fresh processes;
- warm: the same queries repeated in one process, p50 / p95, and spikes kept (of 5);
- exports: full-resolution export time and the server process's peak RSS growth, per
  format (long CSV, wide CSV, Parquet long and wide), each in a fresh process.

    python -m bench.reads [--points 1000000] [--fresh 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.config import Settings
from app.db import Database
from app.metrics.store import MetricRow, MetricStore
from app.migrations import upgrade_to_head
from app.models import Run

SPIKES = {100_003: 50.0, 333_333: -40.0, 500_001: 60.0, 777_777: -30.0, 999_000: 45.0}
ZOOM = (400_000, 600_000)
EXPORTS = {
    "long CSV": ("metrics.csv", {}),
    "wide CSV": ("metrics.csv", {"layout": "wide"}),
    "Parquet long": ("metrics.parquet", {}),
    "Parquet wide": ("metrics.parquet", {"layout": "wide"}),
}


def build(url: str, points: int) -> int:
    db = Database(url)
    store = MetricStore(db)
    with db.session(write=True) as session:
        run = Run(name="bench", source="external", status="completed", config={})
        session.add(run)
        session.flush()
        run_id = run.id
    values = 3.0 + 0.05 * np.random.default_rng(0).standard_normal(points)
    for step, value in SPIKES.items():
        if step < points:
            values[step] = value
    for lo in range(0, points, 100_000):
        hi = min(points, lo + 100_000)
        store.write(
            run_id,
            [
                MetricRow(step, {"train/loss": float(values[step])}, 1.7e9 + step)
                for step in range(lo, hi)
            ],
        )
    db.dispose()
    return run_id


def _client(data_dir: str, url: str) -> Any:
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = Settings(
        data_dir=Path(data_dir),
        database_url=url,
        embedded_worker=False,
        rules_enabled=False,
        allowed_hosts=["testserver"],  # the Host header Starlette's TestClient sends
    )
    return TestClient(create_app(settings))


def _query(client: Any, run_id: int, **params: Any) -> tuple[float, dict[str, Any]]:
    response = client.get(
        f"/api/runs/{run_id}/metrics",
        params={"keys": "train/loss", "max_points": 2000, **params},
    )
    response.raise_for_status()
    server_ms = float(response.headers["server-timing"].split("dur=")[1])
    return server_ms, response.json()["series"]["train/loss"]


def _spikes_kept(series: dict[str, Any], lo: int = 0, hi: int = 10**12) -> tuple[int, int]:
    returned = dict(zip(series["steps"], series["values"], strict=True))
    wanted = {s: v for s, v in SPIKES.items() if lo <= s <= hi and s < series["total_points"] + lo}
    return sum(returned.get(s) == v for s, v in wanted.items()), len(wanted)


def probe_cold(data_dir: str, url: str, run_id: int) -> dict[str, Any]:
    """In a fresh process: the first full-range query, then the first zoomed one. CPU
    time (this process, all threads) next to the wall time: on a shared, busy machine
    it is the steadier figure."""
    with _client(data_dir, url) as client:
        cpu = time.process_time()
        full_ms, full = _query(client, run_id)
        full_cpu_ms = (time.process_time() - cpu) * 1000
        zoom_ms, _ = _query(client, run_id, start=ZOOM[0], end=ZOOM[1])
    return {
        "full_ms": full_ms,
        "full_cpu_ms": full_cpu_ms,
        "zoom_ms": zoom_ms,
        "spikes": _spikes_kept(full),
    }


def probe_export(data_dir: str, url: str, run_id: int, name: str) -> dict[str, Any]:
    """In a fresh process: stream one export to nowhere; time and peak RSS growth."""
    path, params = EXPORTS[name]
    with _client(data_dir, url) as client:
        client.get("/healthz")
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started, cpu = time.perf_counter(), time.process_time()
        size = 0
        with client.stream("GET", f"/api/runs/{run_id}/{path}", params=params) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                size += len(chunk)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "rss_growth_mb": (peak - baseline) / 1024,
        "mb": size / 1e6,
    }


def _fresh(*args: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.reads", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--fresh", type=int, default=3, help="fresh processes for cold reads")
    parser.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        kind, data_dir, url, run_id, *rest = args.probe
        result = (
            probe_cold(data_dir, url, int(run_id))
            if kind == "cold"
            else probe_export(data_dir, url, int(run_id), " ".join(rest))
        )
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade_to_head(url)
        started = time.perf_counter()
        run_id = build(url, args.points)
        print(f"{args.points:,} points written in {time.perf_counter() - started:.1f} s")

        colds = [_fresh("--probe", "cold", tmp, url, str(run_id)) for _ in range(args.fresh)]
        full = statistics.median(c["full_ms"] for c in colds)
        full_cpu = statistics.median(c["full_cpu_ms"] for c in colds)
        zoom = statistics.median(c["zoom_ms"] for c in colds)
        kept, wanted = colds[0]["spikes"]
        print(
            f"cold (fresh process, median of {args.fresh}): 1M -> 2,000 {full:.1f} ms "
            f"(CPU {full_cpu:.1f} ms), zoom {ZOOM[0]:,}-{ZOOM[1]:,} {zoom:.1f} ms; "
            f"spikes kept {kept}/{wanted}"
        )

        rng = np.random.default_rng(1)
        times: list[float] = []
        spikes_ok = True
        with _client(tmp, url) as client:
            for repeat in range(60):
                if repeat % 2 == 0:
                    ms, series = _query(client, run_id)
                    spikes_ok &= _spikes_kept(series)[0] == _spikes_kept(series)[1]
                else:
                    lo = int(rng.integers(0, args.points - 2_000))
                    hi = int(rng.integers(lo + 1_000, args.points))
                    ms, series = _query(client, run_id, start=lo, end=hi)
                    kept_zoom, wanted_zoom = _spikes_kept(series, lo, hi)
                    spikes_ok &= kept_zoom == wanted_zoom
                times.append(ms)
        times.sort()
        p50, p95 = statistics.median(times), times[int(len(times) * 0.95) - 1]
        print(
            f"warm (60 queries, full range and random zooms): p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms; every spike in range kept: {spikes_ok}"
        )

        print(f"{'export':14} {'seconds':>8} {'CPU s':>6} {'MB':>7} {'peak RSS growth MB':>19}")
        for name in EXPORTS:
            result = _fresh("--probe", "export", tmp, url, str(run_id), *name.split())
            print(
                f"{name:14} {result['seconds']:>8.2f} {result['cpu_seconds']:>6.2f} "
                f"{result['mb']:>7.1f} "
                f"{result['rss_growth_mb']:>19.1f}"
            )


if __name__ == "__main__":
    main()
