"""Background work of the API process: a blocking function called every few seconds in
a worker thread, so the event loop (and every live stream on it) never waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import anyio

log = logging.getLogger(__name__)


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has stopped."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Periodic:
    def __init__(self, name: str, function: Callable[[], object], interval_seconds: float) -> None:
        self.name = name
        self.function = function
        self.interval_seconds = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(self.function)
            except Exception:
                # A failing pass is logged and retried on the next tick: background
                # checks must never take the API down.
                log.exception("%s pass failed", self.name)
            await asyncio.sleep(self.interval_seconds)
