"""The event hub is the one reader of the change feed: the rule engine learns from it
which runs have news, and the series cache which keys each write touched. Each hub here
is driven by hand (`hub.poll()`), so a test decides exactly what the hub has delivered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db import Database
from app.main import create_app
from app.metrics.cache import TOUCHES_PER_RUN, SeriesCache
from app.metrics.store import MetricStore
from app.rules.engine import RuleEngine
from app.stream.hub import EventHub
from tests.api.helpers import create_external_run, ingest


def rows(start: int, stop: int, loss: float | str = 2.0) -> list[dict[str, Any]]:
    return [
        {"step": s, "metrics": {"train/loss": loss, "train/grad_norm": 0.5}}
        for s in range(start, stop)
    ]


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    # The app's own engine stays idle; clock passes (which judge any new step) are
    # an hour apart, so only news decides what a pass evaluates.
    quiet = settings.model_copy(
        update={"rules_enabled": False, "rules_settle_seconds": 0.0, "rules_clock_seconds": 3600}
    )
    with TestClient(create_app(quiet)) as test_client:
        yield test_client


def hand_driven_hub(client: TestClient) -> EventHub:
    hub = EventHub(client.app.state.db, poll_seconds=0.1, retention_seconds=900)  # type: ignore[attr-defined]
    hub.seek_head()
    return hub


def deliver(hub: EventHub) -> None:
    while hub.poll():
        pass


def nonfinite_findings(client: TestClient, run_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/api/runs/{run_id}/findings")
    assert response.status_code == 200, response.text
    return [f for f in response.json() if f["code"] == "nonfinite"]


def test_the_engine_judges_the_runs_the_hub_delivered_news_of(app_client: TestClient) -> None:
    base = app_client.app.state.rules  # type: ignore[attr-defined]
    settings = app_client.app.state.settings  # type: ignore[attr-defined]
    old_run = create_external_run(app_client, "before-the-hub")
    ingest(app_client, old_run, rows(0, 3, loss="NaN"))
    hub = hand_driven_hub(app_client)
    engine = RuleEngine(base.db, base.store, base.cache, settings)
    engine.follow(hub)
    engine.poll()  # the first pass catches up on every run with points
    assert len(nonfinite_findings(app_client, old_run)) == 1

    run_id = create_external_run(app_client, "after")
    ingest(app_client, run_id, rows(0, 3, loss="NaN"))
    assert engine.poll() == 0  # the engine does not read the feed: the hub has not told it
    assert nonfinite_findings(app_client, run_id) == []
    deliver(hub)
    assert engine.poll() == 1
    assert len(nonfinite_findings(app_client, run_id)) == 1
    assert engine.poll() == 0  # news is taken once


def test_an_engine_without_a_hub_reads_the_feed_itself(app_client: TestClient) -> None:
    base = app_client.app.state.rules  # type: ignore[attr-defined]
    settings = app_client.app.state.settings  # type: ignore[attr-defined]
    engine = RuleEngine(base.db, base.store, base.cache, settings)
    engine.poll()
    run_id = create_external_run(app_client)
    ingest(app_client, run_id, rows(0, 3, loss="NaN"))
    assert engine.poll() == 1
    assert len(nonfinite_findings(app_client, run_id)) == 1


@pytest.fixture
def cache_setup(app_client: TestClient) -> tuple[TestClient, SeriesCache, EventHub, int, int]:
    """A cache following a hand-driven hub, and a run with train/loss at steps 0..9."""
    hub = hand_driven_hub(app_client)
    store: MetricStore = app_client.app.state.store  # type: ignore[attr-defined]
    cache = SeriesCache(store, 64 * 1024 * 1024, 900)
    cache.follow(hub)
    run_id = create_external_run(app_client)
    ingest(app_client, run_id, rows(0, 10))
    key_id = store.key_ids(["train/loss"])["train/loss"]
    return app_client, cache, hub, run_id, key_id


def read(cache: SeriesCache, run_id: int, key_id: int) -> list[int]:
    db: Database = cache.store.db
    with db.session() as session:
        series = cache.get_many(session, run_id, [key_id])[key_id]
        expected = cache.store.read_series(session, run_id, key_id)
    assert np.array_equal(series.steps, expected.steps)
    assert np.array_equal(series.values, expected.values, equal_nan=True)
    return [int(step) for step in series.steps]


def test_the_cache_learns_touched_keys_from_the_hub_not_the_table(cache_setup: Any) -> None:
    client, cache, hub, run_id, key_id = cache_setup
    assert read(cache, run_id, key_id) == list(range(10))
    ingest(client, run_id, rows(10, 12))
    ingest(client, run_id, [{"step": 12, "metrics": {"val/loss": 2.0}}])  # another key
    deliver(hub)
    reads, loads = cache.feed_reads, cache.loads
    assert read(cache, run_id, key_id) == list(range(12))
    assert (cache.feed_reads, cache.loads) == (reads, loads)  # the tail, found by the index
    ingest(client, run_id, rows(5, 6, loss=9.0))  # a resumed run rewrites step 5
    deliver(hub)
    assert read(cache, run_id, key_id) == list(range(12))
    assert (cache.feed_reads, cache.loads) == (reads, loads + 1)  # reloaded, not appended


def test_events_the_hub_has_not_delivered_are_read_from_the_table(cache_setup: Any) -> None:
    client, cache, hub, run_id, key_id = cache_setup
    deliver(hub)
    assert read(cache, run_id, key_id) == list(range(10))
    ingest(client, run_id, rows(10, 11))
    deliver(hub)
    ingest(client, run_id, rows(11, 13))  # not delivered yet
    reads = cache.feed_reads
    assert read(cache, run_id, key_id) == list(range(13))
    assert cache.feed_reads == reads + 1


def test_an_entry_older_than_the_index_window_is_caught_up_from_the_table(
    cache_setup: Any,
) -> None:
    client, cache, hub, run_id, key_id = cache_setup
    assert read(cache, run_id, key_id) == list(range(10))
    for step in range(10, 10 + TOUCHES_PER_RUN + 1):  # one event more than the index keeps
        ingest(client, run_id, [{"step": step, "metrics": {"val/loss": 1.0}}])
    ingest(client, run_id, rows(10 + TOUCHES_PER_RUN + 1, 10 + TOUCHES_PER_RUN + 2))
    deliver(hub)
    reads = cache.feed_reads
    assert read(cache, run_id, key_id) == [*range(10), 10 + TOUCHES_PER_RUN + 1]
    assert cache.feed_reads == reads + 1
