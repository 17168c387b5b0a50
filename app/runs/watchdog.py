"""The API's own check for runs whose worker stopped beating (a worker that was
killed cannot mark its runs). Workers run the same check; whoever notices first wins."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio

from app.config import Settings
from app.db import Database
from app.runs.lifecycle import mark_stale_runs

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="run-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(self.check)
            except Exception:
                log.exception("stale-run check failed")
            await asyncio.sleep(self.settings.heartbeat_seconds)

    def check(self) -> list[int]:
        with self.db.session(write=True) as session:
            return mark_stale_runs(session, self.settings.heartbeat_timeout_seconds)
