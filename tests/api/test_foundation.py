"""Setup, schema and process-level agreements of the service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from app.config import Settings
from app.db import Database
from app.migrations import head_revision
from app.models import Base
from tests.conftest import ROOT


def test_models_and_migrations_do_not_drift(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models differ from the migrations: {diff}"


def test_metrics_table_is_without_rowid_on_sqlite(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'metrics'")).scalar()
    engine.dispose()
    assert ddl is not None and "WITHOUT ROWID" in ddl.upper()
    assert "PRIMARY KEY (run_id, key_id, step)" in ddl


def test_sqlite_pragmas(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    with db.session() as session:
        pragmas = {
            name: session.execute(text(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }
    db.dispose()
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["synchronous"] == 1  # NORMAL
    assert pragmas["busy_timeout"] >= 5000
    assert pragmas["foreign_keys"] == 1


def test_settings_come_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRAINLENS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRAINLENS_PORT", "9123")
    monkeypatch.setenv("TRAINLENS_HOST", "0.0.0.0")
    monkeypatch.setenv("TRAINLENS_TOKEN", "s3cret")
    settings = Settings()
    assert settings.port == 9123 and settings.host == "0.0.0.0" and settings.token == "s3cret"
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / 'trainlens.db').resolve()}"
    monkeypatch.setenv("TRAINLENS_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert Settings().resolved_database_url == "postgresql+psycopg://u@h/db"


def test_healthz_reports_schema_revision(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["schema_revision"] == head_revision()


def test_api_process_never_imports_torch(tmp_path: Path) -> None:
    # Import every app module, build the app and serve a request: torch must stay out.
    code = f"""
import importlib, pkgutil, sys
import app
for module in pkgutil.walk_packages(app.__path__, "app."):
    importlib.import_module(module.name)
from fastapi.testclient import TestClient
from app.config import Settings
from app.main import create_app
settings = Settings(data_dir={str(tmp_path)!r}, auto_migrate=True)
with TestClient(create_app(settings)) as client:
    assert client.get("/api/presets").status_code == 200
assert "torch" not in sys.modules, "torch was imported"
print("torch-free")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "torch-free" in result.stdout


def test_serve_refuses_an_out_of_date_schema(tmp_path: Path) -> None:
    env = {**os.environ, "TRAINLENS_DATA_DIR": str(tmp_path), "TRAINLENS_AUTO_MIGRATE": "0"}
    env.pop("TRAINLENS_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "trainlens migrate" in result.stderr
    assert "TRAINLENS_AUTO_MIGRATE" in result.stderr


def test_migrate_command_brings_schema_to_head(tmp_path: Path) -> None:
    env = {**os.environ, "TRAINLENS_DATA_DIR": str(tmp_path)}
    env.pop("TRAINLENS_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert head_revision() in result.stdout
    engine = create_engine(f"sqlite:///{tmp_path / 'trainlens.db'}")
    assert {"runs", "metrics", "metric_keys", "findings", "datasets"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_docs_work_offline(client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.text
    assert "cdn" not in html.lower() and "https://" not in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        src = next(part.split('"')[0] for part in html.split('="') if asset in part.split('"')[0])
        assert src.startswith("/"), src
        assert client.get(src).status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "trainlens"


def test_plotly_is_served_from_the_installed_package(client: httpx.Client) -> None:
    response = client.get("/vendor/plotly.min.js")
    assert response.status_code == 200
    assert len(response.content) > 1_000_000
    assert b"plotly" in response.content[:2000].lower()


def test_token_guards_the_api_when_configured(tmp_path: Path, sqlite_url: str) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, token="s3cret")
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/runs").status_code == 401
        assert client.get("/api/runs", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = client.get("/api/runs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        # The token never travels in a URL (it would land in access logs).
        assert client.get("/api/runs?token=s3cret").status_code == 401
        assert client.get("/healthz").status_code == 200
