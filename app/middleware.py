"""Plain ASGI middleware (it leaves streaming responses such as SSE untouched)."""

from __future__ import annotations

import hmac
import json
import time
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class TokenAuth:
    """When a token is configured, /api requires `Authorization: Bearer <token>`; a
    browser's EventSource cannot set headers, so `?token=` is accepted too."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or not scope["path"].startswith("/api"):
            await self.app(scope, receive, send)
            return
        presented = self._presented(scope)
        if presented is not None and hmac.compare_digest(presented, self.token):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": "missing or wrong token: send Authorization: Bearer <token>"})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})

    @staticmethod
    def _presented(scope: Scope) -> str | None:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credential = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    return credential.strip()
        query = scope.get("query_string", b"").decode("latin-1")
        for part in query.split("&"):
            key, _, value = part.partition("=")
            if key == "token":
                return unquote(value)
        return None


class ServerTiming:
    """Adds `Server-Timing: app;dur=<ms>` (time to the response headers), which the
    benchmarks read as the server's own time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = (time.perf_counter() - started) * 1000
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={elapsed_ms:.2f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)
