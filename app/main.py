"""The application factory: routers under /api, the dashboard at /, offline /docs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import plotly
from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.routing import Match, Mount
from starlette.types import Scope

from app.auth.router import router as auth_router
from app.config import Settings, get_settings
from app.datasets.router import router as datasets_router
from app.db import Database
from app.errors import install_error_handlers
from app.estimate.router import router as estimate_router
from app.findings.router import router as findings_router
from app.metrics.cache import SeriesCache
from app.metrics.router import router as metrics_router
from app.metrics.store import MetricStore
from app.middleware import ApiGuard, BodyLimit, HostCheck, ServerTiming
from app.migrations import check_schema, current_revision
from app.openapi import document_errors
from app.rules.engine import RuleEngine
from app.runs.router import router as runs_router
from app.runs.watchdog import Watchdog
from app.stream.hub import EventHub
from app.stream.router import router as stream_router
from app.workers.router import RUN_FILE_PATH
from app.workers.router import router as workers_router
from app.workers.service import list_workers

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
VERSION = "0.1.0"


class StaticMount(Mount):
    """The dashboard's files at /, leaving every /api path to the API: a method an
    endpoint does not allow is answered 405 by the API, not by the file server."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope["path"].startswith("/api"):
            return Match.NONE, {}
        return super().matches(scope)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    db = Database(settings.resolved_database_url)
    store = MetricStore(db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(check_schema, db.engine, db.url, settings.auto_migrate)
        await app.state.hub.start()
        await app.state.watchdog.start()
        if settings.rules_enabled:
            await app.state.rules.start()
        try:
            yield
        finally:
            await app.state.rules.stop()
            await app.state.watchdog.stop()
            await app.state.hub.stop()
            db.dispose()

    # No ReDoc: its page loads a logo from a CDN; /docs (Swagger UI) is fully offline.
    app = FastAPIOffline(
        redoc_url=None,
        title="trainlens",
        version=VERSION,
        description="Diagnostics for transformer language-model training.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.store = store
    app.state.cache = SeriesCache(
        store, settings.series_cache_mb * 1024 * 1024, settings.event_retention_seconds
    )
    app.state.hub = EventHub(db, settings.stream_poll_seconds, settings.event_retention_seconds)
    app.state.watchdog = Watchdog(db, settings)
    app.state.rules = RuleEngine(db, store, app.state.cache, settings)
    # The hub is the process's one reader of the change feed; the engine listens only
    # where its loop runs (a replica with the rules off would collect news forever).
    app.state.cache.follow(app.state.hub)
    if settings.rules_enabled:
        app.state.rules.follow(app.state.hub)
    install_error_handlers(app)
    document_errors(app)
    for router in (
        auth_router,
        runs_router,
        metrics_router,
        findings_router,
        datasets_router,
        stream_router,
        estimate_router,
        workers_router,
    ):
        app.include_router(router, prefix="/api")

    @app.get("/healthz", tags=["health"], response_model=None)
    def healthz() -> dict[str, str | int] | JSONResponse:
        """The API can serve: the database answers a query; its schema revision, and how
        many workers hold a fresh lease."""
        try:
            with db.session() as session:
                session.execute(text("SELECT 1"))
                # Workers whose lease is fresh: 0 means queued runs will wait.
                workers_alive = sum(w.alive for w in list_workers(session, settings))
            revision = current_revision(db.engine) or "none"
        except SQLAlchemyError as error:
            detail = f"database unreachable: {type(error).__name__}"
            return JSONResponse({"detail": detail}, status_code=503)
        return {
            "status": "ok",
            "version": VERSION,
            "database": db.engine.dialect.name,
            "schema_revision": revision,
            "workers_alive": workers_alive,
        }

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        # Served from the installed plotly package: the dashboard needs no CDN.
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    if STATIC_DIR.is_dir():
        static = StaticFiles(directory=STATIC_DIR, html=True)
        app.router.routes.append(StaticMount("/", app=static, name="static"))

    # Outermost last: Server-Timing, then Host, then who may call, then the body limit.
    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        limits_by_path={
            "/api/datasets": settings.dataset_body_bytes,
            RUN_FILE_PATH: settings.run_file_bytes,
        },
    )
    app.add_middleware(ApiGuard, token=settings.token, worker_token=settings.worker_token)
    app.add_middleware(HostCheck, allowed_hosts=settings.effective_allowed_hosts)
    app.add_middleware(ServerTiming)
    return app
