"""runs and findings: AUTOINCREMENT on SQLite, as the models declare (0001 created them
without it, so deleting the newest run gave its id to the next one: a script still
logging to the deleted run, or a worker reporting how its child ended, then wrote into
the new run)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("runs", "findings")


def upgrade() -> None:
    # PostgreSQL's sequences never hand an id out twice; SQLite needs the keyword, which
    # only a rebuilt table can take (env.py turns foreign keys off around the copy, so
    # nothing cascades from the dropped original).
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always"):
            pass
