"""level-of-detail summary of metric series; metric points without foreign keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Per-row foreign-key triggers cost PostgreSQL several times the insert itself; the
    # write path locks the run once per batch instead, and deleting a run deletes its
    # points (app.metrics.store.delete_run_points).
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.drop_constraint("fk_metrics_key_id_metric_keys", type_="foreignkey")
        batch_op.drop_constraint("fk_metrics_run_id_runs", type_="foreignkey")
    op.create_table(
        "metric_lod",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("n_points", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "key_id", "level", "bucket", name=op.f("pk_metric_lod")),
        sqlite_with_rowid=False,
    )
    # Series stored before the summary existed get theirs now.
    from app.metrics import lod

    connection = op.get_bind()
    series = connection.execute(sa.text("SELECT run_id, key_id FROM run_series")).all()
    for run_id, key_id in series:
        lod.rebuild(connection, run_id, key_id)


def downgrade() -> None:
    op.drop_table("metric_lod")
    op.execute("DELETE FROM metrics WHERE run_id NOT IN (SELECT id FROM runs)")
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_metrics_run_id_runs", "runs", ["run_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_foreign_key(
            "fk_metrics_key_id_metric_keys", "metric_keys", ["key_id"], ["id"]
        )
