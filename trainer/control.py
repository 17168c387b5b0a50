"""How a running loop is asked to stop: a polled control object, and SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class TrainControl(Protocol):
    def should_stop(self) -> bool:
        """Polled once per step; True makes the loop checkpoint and return."""


class StopRequested(Exception):
    """A stop honoured inside a step, an evaluation or a sample: the partial work is dropped."""


def check_stop(should_stop: Callable[[], bool] | None) -> None:
    """Raise StopRequested if a stop was asked for (None: this caller cannot be interrupted)."""
    if should_stop is not None and should_stop():
        raise StopRequested


class StopFlag:
    """A thread-safe stop request, also settable from a signal handler."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def request_stop(self, reason: str = "stop requested") -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    def should_stop(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_sigterm(flag: StopFlag) -> Iterator[None]:
    """While inside, SIGTERM sets `flag` instead of killing the process.

    Only the main thread may install handlers; elsewhere this does nothing, and the
    caller's control object is the only way to stop.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        flag.request_stop("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
