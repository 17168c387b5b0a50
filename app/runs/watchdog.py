"""The API's own check for runs whose worker stopped beating (a worker that was
killed cannot mark its runs; workers run the same check, whoever notices first wins),
and for external runs whose script stopped beating (only the API can notice those)."""

from __future__ import annotations

from app.config import Settings
from app.db import Database
from app.periodic import Periodic
from app.runs.lifecycle import mark_crashed_scripts, mark_stale_runs


class Watchdog:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._periodic = Periodic("run-watchdog", self.check, settings.heartbeat_seconds)

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    def check(self) -> list[int]:
        with self.db.session(write=True) as session:
            stale = mark_stale_runs(session, self.settings.heartbeat_timeout_seconds)
            crashed = mark_crashed_scripts(
                session, self.settings.external_heartbeat_timeout_seconds
            )
            return stale + crashed
