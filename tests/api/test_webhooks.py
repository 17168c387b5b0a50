"""Webhooks without SSRF: http(s) only, within the operator's allowlist, never to a
private address unless allowed (judged on the resolved address, at creation and at
every send), a bounded timeout and no redirects."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from fastapi.testclient import TestClient

from app import webhooks
from app.config import Settings
from app.main import create_app


class Receiver(BaseHTTPRequestHandler):
    hits: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.hits.append((self.path, self.headers.get("Host", "")))
        if self.path == "/redirect":
            self.send_response(307)
            self.send_header("Location", "/internal")
        elif self.path == "/slow":
            time.sleep(3)
            self.send_response(204)
        else:
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def create(client: TestClient, url: str, source: str = "external") -> httpx.Response:
    config: dict[str, Any] = {"actions": {"webhook_url": url}}
    if source == "launched":
        config["max_steps"] = 100
    return client.post("/api/runs", json={"name": "hooked", "source": source, "config": config})


@pytest.mark.parametrize("source", ["external", "launched"])
def test_a_run_may_name_only_an_allowed_public_webhook(settings: Settings, source: str) -> None:
    allowed = settings.model_copy(update={"webhook_allowlist": ["https://hooks.example.com/t/"]})
    with TestClient(create_app(allowed)) as client:
        for url, reason in (
            ("file:///etc/passwd", "only http and https"),
            ("gopher://hooks.example.com/t/x", "only http and https"),
            ("https://elsewhere.example.com/t/x", "TRAINLENS_WEBHOOK_ALLOWLIST"),
            ("https://hooks.example.com/other", "TRAINLENS_WEBHOOK_ALLOWLIST"),
            ("http://hooks.example.com/t/x", "TRAINLENS_WEBHOOK_ALLOWLIST"),  # scheme
            ("https://hooks.example.com:8443/t/x", "TRAINLENS_WEBHOOK_ALLOWLIST"),  # port
        ):
            response = create(client, url, source)
            assert response.status_code == 422, url
            (problem,) = response.json()["detail"]
            assert problem["field"] == "config.actions.webhook_url" and reason in problem["msg"]
        assert client.get("/api/runs").json()["total"] == 0


def test_loopback_and_private_destinations_are_refused_by_address(
    settings: Settings, receiver: str
) -> None:
    port = receiver.rsplit(":", 1)[1]
    listed = [f"{receiver}/", f"http://localhost:{port}/", "http://10.0.0.8/", "http://[::1]/"]
    with TestClient(create_app(settings.model_copy(update={"webhook_allowlist": listed}))) as c:
        for url in (
            f"{receiver}/hook",
            f"http://localhost:{port}/hook",  # a name: its resolved address is loopback
            "http://10.0.0.8/hook",
            "http://[::1]/hook",
        ):
            response = create(c, url)
            assert response.status_code == 422, url
            assert "TRAINLENS_WEBHOOK_ALLOW_PRIVATE" in response.json()["detail"][0]["msg"]
    update = {"webhook_allowlist": listed, "webhook_allow_private": True}
    opened = settings.model_copy(update=update)
    with TestClient(create_app(opened)) as client:
        assert create(client, f"http://localhost:{port}/hook").status_code == 201


def test_every_send_checks_the_resolved_address_again(receiver: str) -> None:
    # The operator's own URL is allowlisted, but it resolves to loopback: not sent.
    settings = Settings(rules_webhook_url=f"{receiver}/hook")
    with pytest.raises(webhooks.WebhookRefused, match="loopback"):
        webhooks.send(f"{receiver}/hook", {"finding": 1}, settings)
    port = receiver.rsplit(":", 1)[1]
    by_name = Settings(webhook_allowlist=[f"http://localhost:{port}/"])
    with pytest.raises(webhooks.WebhookRefused, match="private, loopback"):
        webhooks.send(f"http://localhost:{port}/hook", {}, by_name)
    assert Receiver.hits == []
    allowed = by_name.model_copy(update={"webhook_allow_private": True})
    response = webhooks.send(f"http://localhost:{port}/hook", {"finding": 1}, allowed)
    assert response.status_code == 204
    # Sent to the checked address, with the name the operator wrote as the Host.
    assert Receiver.hits == [("/hook", f"localhost:{port}")]


def test_redirects_are_not_followed(receiver: str) -> None:
    settings = Settings(rules_webhook_url=f"{receiver}/", webhook_allow_private=True)
    response = webhooks.send(f"{receiver}/redirect", {}, settings)
    assert response.status_code == 307
    assert [path for path, _ in Receiver.hits] == ["/redirect"]


def test_the_timeout_is_bounded(receiver: str) -> None:
    settings = Settings(
        rules_webhook_url=f"{receiver}/", webhook_allow_private=True, webhook_timeout_seconds=0.3
    )
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        webhooks.send(f"{receiver}/slow", {}, settings)
    assert time.monotonic() - started < 2.5


def test_allowlist_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINLENS_WEBHOOK_ALLOWLIST", "https://a.example/, https://b.example/x/")
    assert Settings().webhook_allowlist == ["https://a.example/", "https://b.example/x/"]
