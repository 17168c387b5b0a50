"""A small Server-Sent Events client for tests: events arrive on a queue."""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class SSEEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


class SSEClient:
    def __init__(self, url: str, last_event_id: str | None = None) -> None:
        self.url = url
        self.events: queue.Queue[SSEEvent] = queue.Queue()
        self.status_code: int | None = None
        self._headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._response: httpx.Response | None = None

    def __enter__(self) -> SSEClient:
        self._thread.start()
        if not self._connected.wait(30):
            raise TimeoutError(f"no response from {self.url}")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._response is not None:
            self._response.close()

    def _run(self) -> None:
        try:
            self._read()
        except httpx.HTTPError:
            if not self._stop.is_set():
                raise

    def _read(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(5, read=None)) as client:
            with client.stream("GET", self.url, headers=self._headers) as response:
                self._response = response
                self.status_code = response.status_code
                self._connected.set()
                fields: dict[str, str] = {}
                data: list[str] = []
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line == "":
                        if data or fields:
                            self.events.put(
                                SSEEvent(
                                    fields.get("event", "message"),
                                    "\n".join(data),
                                    fields.get("id"),
                                )
                            )
                        fields, data = {}, []
                    elif line.startswith(":"):
                        continue
                    else:
                        name, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if name == "data":
                            data.append(value)
                        else:
                            fields[name] = value

    def next(self, kind: str | None = None, timeout: float = 10.0) -> SSEEvent:
        """The next event (of a kind, skipping others) within the timeout."""
        while True:
            event = self.events.get(timeout=timeout)
            if kind is None or event.event == kind:
                return event
