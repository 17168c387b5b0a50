"""Alembic environment: migrations are the only thing that creates or changes tables."""

from __future__ import annotations

from alembic import context

from app.config import get_settings
from app.db import make_engine
from app.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url
    context.configure(
        url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def _sqlite_pragma(connection, pragma: str) -> None:  # type: ignore[no-untyped-def]
    """Run `pragma` outside any transaction (app.db puts sqlite3 in autocommit mode)."""
    connection.connection.driver_connection.execute(pragma)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode ALTERs a SQLite table by copy-and-move: it drops the old table, and
        # with foreign keys on, that DROP cascades into every child table (a migration
        # that adds a column to `runs` would delete all findings and samples). The pragma
        # is a no-op inside a transaction, so it is set before one begins.
        # On the driver's connection: through SQLAlchemy, our engine's "begin" hook
        # would issue BEGIN first, and inside it the pragma silently does nothing.
        _sqlite_pragma(connection, "PRAGMA foreign_keys=OFF")
    try:
        # Batch mode lets later migrations ALTER tables on SQLite (copy-and-move).
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if sqlite:
            _sqlite_pragma(connection, "PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
