"""Plain ASGI middleware (it leaves streaming responses such as SSE untouched): the Host
allowlist, authentication with CSRF checks, the request-body limit, and Server-Timing.

Each refuses a request before the application (or any body parser) sees it."""

from __future__ import annotations

import json
import re
import time
from email.message import Message as MimeMessage
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.service import SESSION_COOKIE, bearer_credential, session_valid, token_matches
from app.errors import quote, too_large_detail

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The body types a page on another site can send without a CORS preflight.
SIMPLE_CONTENT_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)


async def refuse(send: Send, status: int, detail: str, headers: list[Any] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def host_name(host_header: str) -> str:
    """'Example.com:8000' -> 'example.com'; '[::1]:8000' -> '[::1]'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0].rstrip(".")


def host_allowed(name: str, allowed: list[str]) -> bool:
    for pattern in allowed:
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith(".") and (name == pattern[1:] or name.endswith(pattern)):
            return True
    return False


class HostCheck:
    """Refuses a Host header outside TRAINLENS_ALLOWED_HOSTS: a DNS-rebinding page
    reaches this server under its own name, which is not on the list."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host", "")
            if not host_allowed(host_name(host), self.allowed_hosts):
                await refuse(
                    send,
                    400,
                    f"host {quote(host)} is not served here: add it to TRAINLENS_ALLOWED_HOSTS",
                )
                return
        await self.app(scope, receive, send)


def _media_type(content_type: str) -> str:
    message = MimeMessage()
    message["content-type"] = content_type
    return message.get_content_type()


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _netloc(url: str) -> str:
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return ""


def _session_cookie(headers: Headers) -> str:
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(headers.get("cookie", ""))
    except CookieError:
        return ""
    morsel = cookies.get(SESSION_COOKIE)
    return morsel.value if morsel is not None else ""


# What the worker token reaches: the worker endpoints, and writing a launched run's
# metrics and samples (its training child logs through the same client users' scripts
# use). Reading runs is not among them.
WORKER_PATHS = re.compile(r"^/api/workers(/.*)?$")
WORKER_INGEST_PATHS = re.compile(r"^/api/runs/[0-9]+/(metrics|samples)$")


def worker_may(method: str, path: str) -> bool:
    return bool(WORKER_PATHS.match(path)) or (
        method == "POST" and bool(WORKER_INGEST_PATHS.match(path))
    )


class ApiGuard:
    """Who may call /api, and from where.

    - `Authorization: Bearer <token>` (scripts): a page on another site cannot attach
      this header without a CORS preflight, which this server never grants, so such a
      request needs no further checks.
    - The session cookie (the browser, after POST /api/session): a state-changing
      request must also come from this origin (Origin, or else Referer) with a JSON body
      type, so a form or script on another site cannot ride on the cookie.
    - No token configured (loopback default): the same origin checks apply whenever a
      browser says where the request comes from, and the body types a cross-site form
      can send are refused, so a page the user visits cannot steer local runs.
    """

    def __init__(self, app: ASGIApp, token: str | None, worker_token: str | None = None) -> None:
        self.app = app
        self.token = token
        self.worker_token = worker_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        authorization = next(
            (value for name, value in scope["headers"] if name == b"authorization"), None
        )
        if authorization is not None:
            credential = bearer_credential(authorization)
            if self.token is None or (
                credential is not None and token_matches(credential, self.token)
            ):
                await self.app(scope, receive, send)
                return
            if (
                self.worker_token is not None
                and credential is not None
                and token_matches(credential, self.worker_token)
                and worker_may(scope["method"], scope["path"])
            ):
                await self.app(scope, receive, send)
                return
            await self._unauthorized(send)
            return
        is_login = scope["path"] == "/api/session"
        if self.token is not None and not is_login:
            if not session_valid(_session_cookie(headers), self.token):
                await self._unauthorized(send)
                return
        if scope["method"] in UNSAFE_METHODS:
            problem = self._cross_site_problem(headers, browser_session=self.token is not None)
            if problem is not None:
                status, detail = problem
                await refuse(send, status, detail)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _unauthorized(send: Send) -> None:
        await refuse(
            send,
            401,
            "missing or wrong token: send Authorization: Bearer <token>, "
            "or log in with POST /api/session",
            [(b"www-authenticate", b"Bearer")],
        )

    @staticmethod
    def _cross_site_problem(headers: Headers, browser_session: bool) -> tuple[int, str] | None:
        host = headers.get("host", "").lower()
        origin = headers.get("origin")
        if origin is not None:
            if _netloc(origin) != host:
                return 403, f"cross-origin request refused (Origin {quote(origin)})"
        elif browser_session:
            referer = headers.get("referer")
            if referer is None or _netloc(referer) != host:
                return 403, "a same-origin Origin or Referer header is required"
        content_type = headers.get("content-type")
        media_type = _media_type(content_type) if content_type is not None else None
        if browser_session and (media_type is None or not _is_json(media_type)):
            return 415, "send Content-Type: application/json"
        if media_type in SIMPLE_CONTENT_TYPES:
            return 415, f"send Content-Type: application/json, not {quote(media_type)}"
        return None


class BodyLimit:
    """Refuses a request body over the limit with 413 before anything parses it:
    at once when Content-Length says so, else as the body streams in (chunked)."""

    def __init__(self, app: ASGIApp, limit: int, limits_by_path: dict[str, int]) -> None:
        """`limits_by_path`: a regular expression a whole path must match -> its limit."""
        self.limit = limit
        self.default = RequestBodyLimitMiddleware(app, limit)
        self.by_path = [
            (re.compile(pattern), size, RequestBodyLimitMiddleware(app, size))
            for pattern, size in limits_by_path.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.default.app(scope, receive, send)
            return
        limit, limited = next(
            (
                (size, middleware)
                for pattern, size, middleware in self.by_path
                if pattern.fullmatch(scope["path"])
            ),
            (self.limit, self.default),
        )
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await refuse(send, 413, too_large_detail(limit))
            return
        await limited(scope, receive, send)


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
