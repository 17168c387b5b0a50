"""The level-of-detail summary equals the raw data, bucket by bucket and level by level,
however the points arrived: out of order, rewritten, in many small batches."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from app.config import Settings
from app.db import Database
from app.metrics import lod
from app.metrics.points import read_rows
from app.metrics.store import MetricRow, MetricStore, RunGone
from app.models import Run
from tests.api.helpers import create_external_run, ingest


def _new_run(db: Database) -> int:
    with db.session(write=True) as session:
        run = Run(name="lod", source="external", status="running", config={})
        session.add(run)
        session.flush()
        return run.id


def _raw(db: Database, run_id: int, key_id: int) -> tuple[np.ndarray, np.ndarray]:
    with db.session() as session:
        points = read_rows(session.connection(), run_id, key_id, 0)
    return points.steps, points.values


def _check_summary(db: Database, run_id: int, key_id: int) -> int:
    """Every stored bucket, at every level, against the raw points; returns buckets checked."""
    steps, values = _raw(db, run_id, key_id)
    checked = 0
    with db.session() as session:
        stored = session.execute(
            text(
                "SELECT level, bucket, n_points, points FROM metric_lod "
                "WHERE run_id = :run AND key_id = :key ORDER BY level, bucket"
            ),
            {"run": run_id, "key": key_id},
        ).all()
    by_level: dict[int, set[int]] = {}
    for level, bucket, count, blob in stored:
        by_level.setdefault(level, set()).add(bucket)
        width = lod.WIDTHS[level]
        inside = (steps >= bucket * width) & (steps < (bucket + 1) * width)
        raw_steps, raw_values = steps[inside], values[inside]
        kept = np.frombuffer(bytes(blob), lod.POINT)
        assert count == inside.sum(), (level, bucket)
        # Every kept point is a real point with its stored value.
        for step, value in zip(kept["step"].tolist(), kept["value"].tolist(), strict=True):
            index = int(np.searchsorted(raw_steps, step))
            assert raw_steps[index] == step
            raw_value = raw_values[index]
            assert value == raw_value or (math.isnan(value) and math.isnan(raw_value))
        assert kept["step"][0] == raw_steps[0] and kept["step"][-1] == raw_steps[-1]
        finite = np.isfinite(raw_values)
        if finite.any():
            assert np.nanmin(kept["value"][np.isfinite(kept["value"])]) == raw_values[finite].min()
            assert np.nanmax(kept["value"][np.isfinite(kept["value"])]) == raw_values[finite].max()
        for kind in (np.isnan, lambda v: v == math.inf, lambda v: v == -math.inf):
            assert kind(kept["value"]).any() == kind(raw_values).any(), (level, bucket)
        checked += 1
    # Exactly the buckets that hold points exist, at every level.
    for level, width in enumerate(lod.WIDTHS):
        assert by_level.get(level, set()) == set((steps // width).tolist()), level
    return checked


def test_summary_matches_raw_after_out_of_order_and_rewritten_steps(database_url: str) -> None:
    db = Database(database_url)
    store = MetricStore(db)
    run_id = _new_run(db)
    rng = np.random.default_rng(7)
    n = 3000
    values = rng.standard_normal(n)
    values[[5, 777, 2048]] = [math.nan, math.inf, -math.inf]
    steps = np.arange(n) * 3  # sparse steps: buckets hold fewer points than their width
    order = rng.permutation(n)
    # Out of order, in uneven batches, with a second key on every seventh step.
    for chunk in np.array_split(order, 17):
        store.write(
            run_id,
            [
                MetricRow(
                    int(steps[i]),
                    {"loss": float(values[i]), **({"lr": float(i)} if i % 7 == 0 else {})},
                    1.7e9 + i,
                )
                for i in chunk
            ],
        )
    # A resumed run rewrites a stretch, turning a spike into the series' minimum, and a
    # late batch rewrites scattered single steps.
    values[1000:1400] = rng.standard_normal(400) - 50
    store.write(
        run_id,
        [MetricRow(int(steps[i]), {"loss": float(values[i])}) for i in range(1400, 999, -1)],
    )
    for i in (3, 1999, 2999):
        values[i] = 1e6
        store.write(run_id, [MetricRow(int(steps[i]), {"loss": 1e6})])
    key_ids = store.key_ids(["loss", "lr"])
    raw_steps, raw_values = _raw(db, run_id, key_ids["loss"])
    assert raw_steps.tolist() == steps.tolist()
    np.testing.assert_array_equal(raw_values, values)
    assert _check_summary(db, run_id, key_ids["loss"]) > 200
    assert _check_summary(db, run_id, key_ids["lr"]) > 50

    # A fresh rebuild from the raw points gives the same summary.
    with db.session() as session:
        before = session.execute(text("SELECT * FROM metric_lod ORDER BY 1, 2, 3, 4")).all()
    with db.session(write=True) as session:
        session.execute(text("DELETE FROM metric_lod"))
        for key_id in key_ids.values():
            lod.rebuild(session.connection(), run_id, key_id)
    with db.session() as session:
        after = session.execute(text("SELECT * FROM metric_lod ORDER BY 1, 2, 3, 4")).all()
    assert [tuple(row[:5]) + (bytes(row[5]),) for row in before] == [
        tuple(row[:5]) + (bytes(row[5]),) for row in after
    ]
    db.dispose()


def test_a_view_from_the_summary_keeps_every_extreme(database_url: str) -> None:
    """A window read through the summary holds its raw extremes and counts every point."""
    db = Database(database_url)
    store = MetricStore(db)
    run_id = _new_run(db)
    n = 40_000
    values = np.sin(np.arange(n) / 500.0)
    spikes = [1234, 20_001, 39_999]
    values[spikes] = [9.0, -9.0, 8.0]
    store.write(run_id, [MetricRow(s, {"x": float(values[s])}, 1.0) for s in range(n)])
    key_id = store.key_ids(["x"])["x"]
    for lo, hi, max_points in [(0, n - 1, 100), (1000, 21_000, 50), (20_000, 20_001, 8)]:
        with db.session() as session:
            view = lod.read_view(session.connection(), run_id, key_id, lo, hi, max_points)
        assert view.total == hi - lo + 1
        window = values[lo : hi + 1]
        assert view.points.values.max() == window.max()
        assert view.points.values.min() == window.min()
        for spike in spikes:
            if lo <= spike <= hi:
                assert spike in view.points.steps.tolist()
        if not view.exact:
            assert len(view.points) < 10 * lod.ROWS_PER_POINT * max_points
    db.dispose()


def test_deleting_a_run_takes_its_points_and_summary(
    client: httpx.Client, settings: Settings
) -> None:
    run_id = create_external_run(client)
    rows = [{"step": s, "metrics": {"x": s}} for s in range(100)]
    assert ingest(client, run_id, rows).status_code == 200
    assert client.delete(f"/api/runs/{run_id}").status_code in (200, 204)
    db = Database(settings.resolved_database_url)
    with db.session() as session:
        for table in ("metrics", "metric_lod"):
            count = session.scalar(text(f"SELECT count(*) FROM {table} WHERE run_id = {run_id}"))
            assert count == 0, table
    db.dispose()
    # Points for a run that is gone are refused, never stored as orphans.
    store = MetricStore(Database(settings.resolved_database_url))
    with pytest.raises(RunGone):
        store.write(run_id, [MetricRow(1, {"x": 1.0})])
    assert ingest(client, run_id, [{"step": 1, "metrics": {"x": 1}}]).status_code == 404
    store.db.dispose()


def test_migration_builds_the_summary_of_existing_points(tmp_path: Path) -> None:
    """Points stored before revision 0003 get their summary when it is applied."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from app.migrations import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = alembic_config(url)
    before = ScriptDirectory.from_config(config).get_revision("0003").down_revision
    command.upgrade(config, str(before))
    db = Database(url)
    with db.session(write=True) as session:
        session.execute(
            text(
                "INSERT INTO runs (id, name, source, status, config, attempt, created_at) "
                "VALUES (1, 'old', 'external', 'completed', '{}', 0, 0)"
            )
        )
        session.execute(text("INSERT INTO metric_keys (id, name) VALUES (1, 'loss')"))
        session.execute(
            text("INSERT INTO metrics VALUES (1, 1, :step, :value, 0, 0.0)"),
            [{"step": s, "value": float((s * 37) % 101)} for s in range(2000)],
        )
        session.execute(text("INSERT INTO run_series VALUES (1, 1, 0, 1999, 0.0, 0, 0.0)"))
    db.dispose()
    command.upgrade(alembic_config(url), "head")
    db = Database(url)
    assert _check_summary(db, 1, 1) > 70  # 2,000 steps: 63 + 8 + 1 + ... buckets
    db.dispose()
