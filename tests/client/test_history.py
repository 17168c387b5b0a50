"""`trainlens.history` / `run.history`: a run read back at full resolution, page by page,
exactly as it was logged (NaN/Inf, keys logged at different steps, gaps)."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest

import trainlens
from tests.conftest import LiveServer

STEPS = 3_000
Expected = dict[str, dict[int, float]]


def logged_rows() -> list[tuple[int, dict[str, float]]]:
    """Train rows every step but a gap, eval every 50 steps, a rare key, NaN and ±Inf."""
    rows = []
    for step in range(STEPS):
        if 1_200 <= step < 1_300:
            continue  # nothing logged at all here
        row = {"train/loss": 5.0 - step * 1e-3 + (step % 7) * 1e-4, "train/lr": step * 1e-7}
        if step % 50 == 0:
            row["val/loss"] = 4.0 + 1 / (step + 1)
        if step % 997 == 3:
            row["rare"] = float(step)
        if step == 777:
            row["train/loss"] = math.nan
        if step == 1_500:
            row["train/lr"] = math.inf
        if step == 2_500:
            row["val/loss"] = -math.inf
        rows.append((step, row))
    return rows


def log_run(server: LiveServer, tmp_path: Path) -> tuple[int, Expected]:
    expected: Expected = {}
    run = trainlens.init("history", url=server.url, offline_dir=tmp_path, system_metrics=False)
    for step, row in logged_rows():
        # A step's keys in two calls, as a script logging train and eval apart does.
        train = {k: v for k, v in row.items() if k.startswith("train/")}
        run.log(train, step=step)
        rest = {k: v for k, v in row.items() if k not in train}
        if rest:
            run.log(rest, step=step)
        for key, value in row.items():
            expected.setdefault(key, {})[step] = value
    run.finish()
    assert run.errors == [] and run.id is not None
    return run.id, expected


def same(left: list[float | None], right: list[float | None]) -> bool:
    """Equal cell by cell, NaN equal to NaN (a float, not a string)."""
    return len(left) == len(right) and all(
        a == b or (isinstance(a, float) and math.isnan(a) and isinstance(b, float) and b != b)
        for a, b in zip(left, right, strict=True)
    )


def check(history: trainlens.History, expected: Expected, lo: int, hi: int) -> None:
    steps = sorted({s for points in expected.values() for s in points if lo <= s <= hi})
    assert history.steps == steps
    assert len(history.wall_times) == len(steps)
    assert all(isinstance(t, float) and t > 1e9 for t in history.wall_times)
    assert sorted(history.columns) == sorted(expected)
    for key, points in expected.items():
        assert same(history.columns[key], [points.get(step) for step in steps]), key


def test_history_pages_through_everything_logged(live_server: LiveServer, tmp_path: Path) -> None:
    run_id, expected = log_run(live_server, tmp_path)
    # 97 steps a page: some 30 pages, with page ends inside the gap and at NaN/Inf steps.
    everything = trainlens.history(run_id, url=live_server.url, page_size=97)
    check(everything, expected, 0, STEPS)
    assert len(everything) == STEPS - 100
    loss = everything["train/loss"]
    assert math.isnan(loss[777]) and everything.columns["train/lr"][1_400] == math.inf
    assert everything["val/loss"][everything.steps.index(2_500)] == -math.inf
    assert everything["val/loss"][1] is None  # no eval at step 1: a gap, not a NaN
    # one big page answers the same
    check(trainlens.history(run_id, url=live_server.url, page_size=100_000), expected, 0, STEPS)


def test_history_bounds_and_key_selection(live_server: LiveServer, tmp_path: Path) -> None:
    run_id, expected = log_run(live_server, tmp_path)
    chosen = {key: expected[key] for key in ("val/loss", "rare")}
    for lo, hi in [(0, 0), (3, 3), (1_150, 1_350), (1_201, 1_299), (2_400, 10**6)]:
        page = trainlens.history(
            run_id, ["val/loss", "rare"], lo, hi, url=live_server.url, page_size=7
        )
        # only steps where a chosen key has a point; bounds inclusive
        check(page, chosen, lo, hi)
    inside_gap = trainlens.history(run_id, "rare", 1_201, 1_299, url=live_server.url)
    assert inside_gap.steps == [] and inside_gap.columns == {"rare": []}
    tail = trainlens.history(run_id, "train/loss", start=2_990, url=live_server.url, page_size=3)
    assert tail.steps == list(range(2_990, STEPS))


def test_run_history_on_the_run_object(live_server: LiveServer, tmp_path: Path) -> None:
    run = trainlens.init(url=live_server.url, offline_dir=tmp_path, system_metrics=False)
    for step in range(250):
        run.log({"a": float(step), "b": "NaN" if step % 2 else step}, step=step * 2)
    assert run.flush(30)
    live = run.history(page_size=16)  # while the run is open
    run.finish()
    assert live.steps == list(range(0, 500, 2))
    assert live["a"] == [float(step) for step in range(250)]
    assert all(math.isnan(v) if s % 2 else v == s for s, v in enumerate(live["b"]))  # type: ignore[arg-type]
    assert run.history(["a"], 10, 20).columns == {"a": [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]}


def test_history_refuses_what_is_not_there(live_server: LiveServer, tmp_path: Path) -> None:
    run_id, _ = log_run(live_server, tmp_path)
    with pytest.raises(KeyError, match="'val/los'"):
        trainlens.history(run_id, ["train/loss", "val/los"], url=live_server.url)
    with pytest.raises(LookupError, match="run"):
        trainlens.history(run_id + 1000, url=live_server.url)
    with pytest.raises(ValueError, match="end"):
        trainlens.history(run_id, start=10, end=5, url=live_server.url)
    with pytest.raises(ValueError, match="page_size"):
        trainlens.history(run_id, page_size=0, url=live_server.url)
    with pytest.raises(ValueError, match="no metric"):
        trainlens.history(run_id, [], url=live_server.url)
    offline = trainlens.init(mode="offline", offline_dir=tmp_path)
    with pytest.raises(RuntimeError, match="sync"):
        offline.history()
    offline.finish()
    with pytest.raises(httpx.ConnectError):
        trainlens.history(run_id, url="http://127.0.0.1:9")
