"""Findings depend on a run's data only: the same series posted whole, one row per
request with eval rows before train rows, or in random batchings (steps cut anywhere)
gives the findings of the offline replay, for every rule's firing example.

The engine runs in-process over a real SQLite database, with a clock the test moves:
between requests the clock stands still, so the latest step of a run is never settled
until the test says so, as with a script logging faster than the settle time."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.metrics.cache import SeriesCache
from app.metrics.service import ingest as ingest_rows
from app.rules.engine import RuleEngine
from app.rules.registry import RULES
from app.rules.replay import replay
from app.stream.hub import EventHub
from tests.api.helpers import create_external_run
from tests.rules.examples import Example, examples, rows_of

EVAL_PREFIXES = ("val/", "train/loss_eval")
Request = list[dict[str, Any]]
Harness = tuple[TestClient, RuleEngine, "Clock", EventHub]


class Clock:
    """The engine's wall clock. Held in the past while a test posts (however slow the
    machine, no step settles by itself); `settle()` moves it past every write."""

    def __init__(self) -> None:
        self.at = 0.0

    def __call__(self) -> float:
        return self.at

    def hold(self) -> None:
        self.at = 0.0

    def settle(self) -> None:
        self.at = time.time() + 60


@pytest.fixture(scope="module")
def harness(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Harness]:
    from app.migrations import upgrade_to_head

    directory: Path = tmp_path_factory.mktemp("invariance")
    url = f"sqlite:///{directory / 'trainlens.db'}"
    upgrade_to_head(url)
    settings = Settings(
        data_dir=directory / "data",
        database_url=url,
        embedded_worker=False,
        rules_enabled=False,
        rules_settle_seconds=1.0,
    )
    # Judged on the wall clock, not on data: the test's clock jumps would stall the runs.
    settings.rules.stalled.enabled = False  # type: ignore[attr-defined]
    clock = Clock()
    with TestClient(create_app(settings)) as client:
        base = client.app.state.rules  # type: ignore[attr-defined]
        # As in the API: the engine and its cache follow the feed through a hub, here
        # one the test drives, so every pass sees exactly what was posted before it.
        hub = EventHub(base.db, poll_seconds=0.1, retention_seconds=900)
        hub.seek_head()
        cache = SeriesCache(base.store, 512 * 1024 * 1024, 900)
        cache.follow(hub)
        engine = RuleEngine(base.db, base.store, cache, settings, clock=clock)
        engine.follow(hub)
        yield client, engine, clock, hub


def _pass(engine: RuleEngine, hub: EventHub) -> None:
    """One engine pass after the hub has delivered every event written so far."""
    while hub.poll():
        pass
    engine.poll()


def _split_eval(row: dict[str, Any]) -> list[dict[str, Any]]:
    metrics = row["metrics"]
    evals = {k: v for k, v in metrics.items() if k.startswith(EVAL_PREFIXES)}
    train = {k: v for k, v in metrics.items() if k not in evals}
    return [{"step": row["step"], "metrics": part} for part in (evals, train) if part]


# One row per request starts this many steps before the example's first finding: the
# quiet steps before it go in one request (a request each costs ~20 ms of ingest and
# engine pass on a 2-core machine, and they change nothing the replay judges).
LEAD_IN = 10


def _requests(
    rows: list[dict[str, Any]], mode: str, rng: random.Random, first_finding: int
) -> list[Request]:
    if mode == "whole":
        return [rows]
    if mode == "one_row_eval_first":
        # One row per request, and a step's eval row before its train row (nanoGPT
        # evaluates at the top of a step): two requests for an eval step.
        quiet = [row for row in rows if row["step"] < first_finding - LEAD_IN]
        rest = rows[len(quiet) :]
        return ([quiet] if quiet else []) + [[part] for row in rest for part in _split_eval(row)]
    # Random batchings: each row's keys split in two parts in random order, then cut
    # into batches anywhere (a batch may end between two parts of one step).
    parts: list[dict[str, Any]] = []
    for row in rows:
        keys = list(row["metrics"])
        rng.shuffle(keys)
        cut = rng.randint(1, len(keys))
        for chunk in (keys[:cut], keys[cut:]):
            if chunk:
                metrics = {key: row["metrics"][key] for key in chunk}
                parts.append({"step": row["step"], "metrics": metrics})
    batches: list[Request] = []
    while parts:
        size = rng.randint(1, 40)
        batches.append(parts[:size])
        parts = parts[size:]
    return batches


def _engine_findings(client: TestClient, run_id: int) -> list[tuple[Any, ...]]:
    response = client.get(f"/api/runs/{run_id}/findings")
    assert response.status_code == 200, response.text
    return sorted(
        (
            f["code"],
            f["evidence"].get("subject", ""),
            f["first_step"],
            f["last_step"],
            f["severity"],
            f["state"],
        )  # fmt: skip
        for f in response.json()
    )


def _post(engine: RuleEngine, run_id: int, rows: Request) -> None:
    """What POST /api/runs/{id}/metrics does, in-process (the HTTP layer is tested
    elsewhere; here thousands of small requests must stay fast)."""
    ingest_rows(engine.store, run_id, json.dumps({"rows": rows}).encode(), 10_000)


_REPLAYED: dict[str, list[tuple[Any, ...]]] = {}


def _replayed(example: Example) -> list[tuple[Any, ...]]:
    if example.code in _REPLAYED:
        return _REPLAYED[example.code]
    _REPLAYED[example.code] = result = sorted(
        (
            e.code,
            e.subject,
            e.first_step,
            e.last_step,
            e.severity,
            "resolved" if e.state == "resolved" else "firing",
        )  # fmt: skip
        for e in replay(RULES, example.series, example.config, every=1)
    )
    return result


@pytest.mark.parametrize("mode", ["whole", "one_row_eval_first", "random_0", "random_1"])
def test_findings_do_not_depend_on_batching_or_order(harness: Harness, mode: str) -> None:
    client, engine, clock, hub = harness
    rng = random.Random(mode)
    cases = examples()
    runs: list[tuple[Example, int, list[Request]]] = []
    for example in cases:
        run_id = create_external_run(client, f"{example.code}-{mode}", **example.config)
        first = min(finding[2] for finding in _replayed(example))
        runs.append((example, run_id, _requests(rows_of(example.series), mode, rng, first)))
    # Round-robin: one request of every run, then one engine pass.
    for index in range(max(len(requests) for _, _, requests in runs)):
        for _, run_id, requests in runs:
            if index < len(requests):
                _post(engine, run_id, requests[index])
        _pass(engine, hub)
    clock.settle()  # the runs go quiet: their latest steps settle
    _pass(engine, hub)
    clock.hold()
    for example, run_id, _ in runs:
        expected = _replayed(example)
        assert example.code in [finding[0] for finding in expected], example.code
        assert _engine_findings(client, run_id) == expected, (example.code, mode)


def test_a_late_train_row_for_an_already_judged_eval_step_is_still_judged(
    harness: Harness,
) -> None:
    """A client that flushes step N's eval row, then (after the settle time) its train
    row: the loss spike at N is found, as offline."""
    client, engine, clock, hub = harness
    example = next(e for e in examples() if e.code == "loss_spike")
    rows = rows_of(example.series)
    run_id = create_external_run(client, "late-train-row")
    _post(engine, run_id, rows[:40])
    _pass(engine, hub)
    _post(engine, run_id, [{"step": 40, "metrics": {"val/loss": 2.0}}])
    clock.settle()  # step 40 settles with only its val row
    _pass(engine, hub)
    clock.hold()
    assert _engine_findings(client, run_id) == []
    _post(engine, run_id, [{"step": 40, "metrics": {"train/loss": 5.0}}])
    clock.settle()
    _pass(engine, hub)
    clock.hold()
    (spike,) = _engine_findings(client, run_id)
    assert spike[:3] == ("loss_spike", "", 40)
