"""Dashboard benchmark, in a real (headless) browser against a live server:

- live latency: a step written over REST → that point in the loss chart's plotted data
  (p50 / p95 / max over a series of single-step writes), idle and then with two
  CPU-burning processes beside it (as training on the same box);
- time to first render of a run page whose loss series has 1,000,000 steps (navigation
  start → the chart's first data drawn; cold: the server reads the series from the
  database; warm: a reload, with the series in the server's memory).

    python -m bench.ui_latency [--samples 60] [--steps 1000000]

The browser tests call the same functions and assert the bounds (p95 < 1 s).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from app.db import Database
from app.metrics.store import MetricRow, MetricStore

WRITE_BATCH = 100_000


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarize(latencies: list[float]) -> dict[str, float]:
    return {
        "samples": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": percentile(latencies, 0.95) * 1000,
        "max_ms": max(latencies) * 1000,
    }


# True once the chart's plotted series for `key` has a point at x == step (step axis);
# only the tail is searched, where live points land.
HAS_POINT_JS = """
([chartId, key, step]) => {
  const plot = document.querySelector(`#chart-${chartId} .plot`);
  const trace = plot?.data?.find((t) => t.meta?.key === key && t.meta.role === "raw");
  if (!trace) return false;
  const x = trace.x;
  for (let i = x.length - 1; i >= 0 && i >= x.length - 50; i--) {
    if (x[i] === step) return true;
  }
  return false;
}
"""


def wait_for_point(
    page: Any, step: float, timeout_ms: float = 10_000, chart: str = "loss", key: str = "train/loss"
) -> None:
    page.wait_for_function(HAS_POINT_JS, arg=[chart, key, step], timeout=timeout_ms, polling="raf")


LAYERS = ["wte", "wpe", "h0", "h1", "h2", "h3", "ln_f"]


def trainer_like_row(step: int, instrument_interval: int = 5) -> dict[str, Any]:
    """One step as the trainer logs it (every chart of the run page gets a point; the
    per-layer statistics every few steps), so latency is measured with a full page."""
    wobble = (step * 7919 % 100) / 100
    metrics: dict[str, float] = {
        "train/loss": 1.5 + 3.0 / (1 + step / 200) + 0.05 * wobble,
        "train/grad_norm": 0.5 + wobble,
        "train/grad_clipped": float(wobble > 0.9),
        "train/lr": 1e-3,
        "perf/tokens_per_sec": 20_000 + 500 * wobble,
        "perf/mfu": 0.3,
        "perf/step_ms": 50 + wobble,
        "sys/mem_gb": 1.2,
    }
    if step % instrument_interval == 0:
        for i in range(4):
            for stat in ("mean", "std", "absmax", "frac_saturated", "frac_dead"):
                metrics[f"act/h{i}.mlp/{stat}"] = wobble
            for stat in ("mean", "std", "absmax"):
                metrics[f"act/h{i}.resid/{stat}"] = 1 + wobble
        for layer in LAYERS:
            metrics[f"grad/{layer}/norm"] = wobble
            metrics[f"param/{layer}/norm"] = 10 + wobble
            metrics[f"update/{layer}/ratio"] = 1e-3 * (0.5 + wobble)
    return {"step": step, "metrics": metrics}


@contextmanager
def cpu_burners(count: int) -> Iterator[None]:
    """`count` processes spinning on a core each, as training beside the dashboard does."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait()


def measure_live_latency(
    page: Any, base_url: str, run_id: int, first_step: int, samples: int, pause_s: float = 0.05
) -> list[float]:
    """Seconds from just before each single-step write (POST .../metrics, a full trainer
    row) until the point is in the loss chart's data. The page must already show the run."""
    latencies = []
    with httpx.Client(base_url=base_url) as client:
        for i in range(samples):
            step = first_step + i
            started = time.perf_counter()
            response = client.post(
                f"/api/runs/{run_id}/metrics", json={"rows": [trainer_like_row(step)]}
            )
            response.raise_for_status()
            wait_for_point(page, step)
            latencies.append(time.perf_counter() - started)
            time.sleep(pause_s)  # a trainer logs at intervals; don't measure a pile-up
    return latencies


def write_long_series(
    database_url: str, run_id: int, steps: int, spike_step: int | None = None
) -> float:
    """Write `steps` points of train/loss straight into the database through the store (as
    the worker's sink does); returns the seconds it took."""
    db = Database(database_url)
    store = MetricStore(db)
    started = time.perf_counter()
    origin = time.time() - steps * 0.01
    try:
        for lo in range(0, steps, WRITE_BATCH):
            rows = [
                MetricRow(
                    step,
                    {"train/loss": 99.0 if step == spike_step else 1.5 + 3.0 / (1 + step / 1e4)},
                    origin + step * 0.01,
                )
                for step in range(lo, min(steps, lo + WRITE_BATCH))
            ]
            store.write(run_id, rows)
    finally:
        db.dispose()
    return time.perf_counter() - started


def first_render(page: Any, url: str, timeout_ms: float = 60_000) -> dict[str, float]:
    """Open a run page; time until the loss chart has drawn data, two ways: the page's own
    mark (ms since navigation start) and the wall clock around the navigation."""
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_function(
        "performance.getEntriesByName('trainlens:first-data:loss').length > 0",
        timeout=timeout_ms,
    )
    wall = time.perf_counter() - started
    mark = page.evaluate("performance.getEntriesByName('trainlens:first-data:loss')[0].startTime")
    return {"first_data_ms": float(mark), "wall_ms": wall * 1000}


def plotted_points(page: Any) -> dict[str, Any]:
    return page.evaluate(  # type: ignore[no-any-return]
        """() => {
          const plot = document.querySelector('#chart-loss .plot');
          const trace = plot.data.find(
            (t) => t.meta?.key === 'train/loss' && t.meta.role === 'raw');
          return { n: trace.x.length, x: Array.from(trace.x), y: Array.from(trace.y),
                   maxPoints: Number(plot.dataset.maxPoints) };
        }"""
    )


def main() -> int:
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS, VIEWPORT, find_chromium
    from tests.conftest import server_on_fresh_sqlite

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--steps", type=int, default=1_000_000)
    args = parser.parse_args()
    executable = find_chromium()
    if executable is None:
        print("no Chromium found (apt-get install chromium)")
        return 1
    with tempfile.TemporaryDirectory() as tmp, server_on_fresh_sqlite(Path(tmp)) as server:
        results = _run(server, executable, args, sync_playwright, CHROMIUM_ARGS, VIEWPORT)
    print(json.dumps(results, indent=2))
    return 0


def _run(
    server: Any,
    executable: str,
    args: Any,
    sync_playwright: Any,
    flags: list[str],
    viewport: dict[str, int],
) -> dict[str, Any]:
    api = f"{server.url}/api"
    config = {"vocab_size": 65, "grad_clip": 1.0}
    live = httpx.post(
        f"{api}/runs", json={"name": "latency", "source": "external", "config": config}
    ).json()["id"]
    httpx.post(
        f"{api}/runs/{live}/metrics", json={"rows": [trainer_like_row(s) for s in range(500)]}
    )
    long = httpx.post(f"{api}/runs", json={"name": "million", "source": "external"}).json()["id"]
    write_s = write_long_series(server.database_url, long, args.steps, spike_step=args.steps // 3)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=flags)
        page = browser.new_page(viewport=viewport)
        page.goto(f"{server.url}/run.html?id={live}")
        page.wait_for_function(
            "document.querySelector('#chart-act-std .plot')?.dataset.state === 'ready'"
        )
        latency = summarize(measure_live_latency(page, server.url, live, 500, args.samples))
        with cpu_burners(2):
            loaded = summarize(
                measure_live_latency(page, server.url, live, 500 + args.samples, args.samples)
            )
        cold = first_render(page, f"{server.url}/run.html?id={long}")
        points = plotted_points(page)
        warm = first_render(page, f"{server.url}/run.html?id={long}")
        browser.close()
    return {
        "live_latency": latency,
        "live_latency_two_cpu_burners": loaded,
        "million_steps": {
            "steps": args.steps,
            "write_seconds": round(write_s, 2),
            "cold": cold,
            "warm": warm,
            "points_in_browser": points["n"],
            "spike_visible": 99.0 in points["y"],
        },
    }


if __name__ == "__main__":
    raise SystemExit(main())
