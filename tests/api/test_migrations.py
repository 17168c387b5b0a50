"""Upgrading a database that already holds runs keeps every row of them."""

from __future__ import annotations

from sqlalchemy import text

from app.db import make_engine
from app.migrations import upgrade

# One row in each table that hangs off `runs`, written at the first schema.
SEED = [
    "INSERT INTO runs (id, name, source, status, config, created_at, attempt) "
    "VALUES (1, 'old', 'external', 'completed', '{}', 1.0, 0)",
    "INSERT INTO metric_keys (id, name) VALUES (1, 'train/loss')",
    "INSERT INTO metrics (run_id, key_id, step, value, nonfinite, wall_time) "
    "VALUES (1, 1, 0, 4.2, 0, 1.0)",
    "INSERT INTO findings (id, run_id, code, title, severity, state, evidence, explanation, "
    "fix, created_at, updated_at) VALUES (1, 1, 'init_loss', 't', 'warning', 'firing', '{}', "
    "'e', 'f', 1.0, 1.0)",
    "INSERT INTO samples (id, run_id, step, text, created_at) VALUES (1, 1, 0, 'hi', 1.0)",
]
COUNTED = ["runs", "metrics", "findings", "samples"]


def _counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
                for table in COUNTED
            }
    finally:
        engine.dispose()


def test_upgrading_from_the_first_schema_keeps_runs_and_what_hangs_off_them(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0001")
    engine = make_engine(url)
    with engine.begin() as conn:
        for statement in SEED:
            conn.execute(text(statement))
    engine.dispose()
    assert _counts(url) == dict.fromkeys(COUNTED, 1)

    upgrade(url)

    assert _counts(url) == dict.fromkeys(COUNTED, 1)
