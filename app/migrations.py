"""Alembic, driven from code: `trainlens migrate`, the start-up schema check, tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from app.db import make_engine

SCRIPT_LOCATION = Path(__file__).resolve().parent.parent / "alembic"


class SchemaOutOfDate(RuntimeError):
    """The database is not at the revision this code was written for."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # ConfigParser interpolation: a literal % in a URL (an escaped password) must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "alembic/versions holds no migration"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def check_schema(engine: Engine, url: str, auto_migrate: bool) -> str:
    """Return the schema revision, migrating first when allowed; refuse an old schema."""
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return head
    if auto_migrate:
        upgrade(url)
        return head
    raise SchemaOutOfDate(
        f"the database schema is at revision {current or 'none (empty database)'} but this "
        f"trainlens needs {head}: run `trainlens migrate` "
        "(or start with TRAINLENS_AUTO_MIGRATE=1)"
    )


def upgrade_to_head(url: str) -> str:
    engine = make_engine(url)
    try:
        upgrade(url)
        return current_revision(engine) or ""
    finally:
        engine.dispose()
