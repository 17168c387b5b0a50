"""Safe by default: the token and the browser session, cross-site requests, the Host
allowlist, the body-size limit, and `serve` refusing an open port without a token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.api.helpers import create_external_run
from tests.conftest import ROOT, LiveServer, free_port

TOKEN = "s3cret-token"
ORIGIN = "http://testserver"


@pytest.fixture
def guarded(settings: Settings) -> Iterator[TestClient]:
    """An app with a token, on SQLite and PostgreSQL."""
    with TestClient(create_app(settings.model_copy(update={"token": TOKEN}))) as client:
        yield client


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def launched_run(client: httpx.Client, headers: dict[str, str] | None = None) -> int:
    response = client.post(
        "/api/runs", json={"name": "victim", "config": {"max_steps": 100}}, headers=headers
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def status_of(client: httpx.Client, run_id: int, headers: dict[str, str] | None = None) -> str:
    return str(client.get(f"/api/runs/{run_id}", headers=headers).json()["status"])


def login(client: TestClient) -> None:
    response = client.post("/api/session", json={"token": TOKEN}, headers={"Origin": ORIGIN})
    assert response.status_code == 200, response.text


# -- the token --------------------------------------------------------------------------


def test_an_empty_token_is_no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRAINLENS_TOKEN", "")
    assert Settings().token is None
    monkeypatch.setenv("TRAINLENS_TOKEN", "   ")
    assert Settings().token is None
    assert Settings(token="").token is None


def test_the_worker_token_reaches_only_the_worker_endpoints_and_ingest(
    settings: Settings,
) -> None:
    """A worker's token (on a GPU box someone else may administer) can claim runs and
    log their metrics, but cannot read, launch, stop or delete runs."""
    update = {"token": TOKEN, "worker_token": "w0rker-token"}
    with TestClient(create_app(settings.model_copy(update=update))) as client:
        run_id = launched_run(client, bearer())
        worker = bearer("w0rker-token")
        hello = {"name": "gpu-1", "instance": "instance-1", "host": "gpu", "pid": 7, "slots": 1}
        assert client.post("/api/workers/register", json=hello, headers=worker).status_code == 200
        claim = {"instance": "instance-1"}
        claimed = client.post("/api/workers/gpu-1/claim", json=claim, headers=worker)
        assert claimed.status_code == 200 and claimed.json()["id"] == run_id
        rows = {"rows": [{"step": 0, "metrics": {"train/loss": 4.2}}]}
        ingest = client.post(f"/api/runs/{run_id}/metrics", json=rows, headers=worker)
        assert ingest.status_code == 200, ingest.text
        for method, path in (
            ("GET", f"/api/runs/{run_id}"),
            ("GET", "/api/runs"),
            ("POST", f"/api/runs/{run_id}/stop"),
            ("DELETE", f"/api/runs/{run_id}"),
            ("GET", f"/api/runs/{run_id}/metrics?keys=train/loss"),
        ):
            assert client.request(method, path, headers=worker).status_code == 401, path
        assert status_of(client, run_id, bearer()) == "running"


def test_an_empty_bearer_credential_is_refused(guarded: TestClient) -> None:
    assert guarded.get("/api/runs", headers={"Authorization": "Bearer "}).status_code == 401
    assert guarded.get("/api/runs", headers={"Authorization": "Bearer"}).status_code == 401
    assert guarded.get("/api/runs", params={"token": ""}).status_code == 401


def test_a_non_ascii_token_is_401_not_500(guarded: TestClient) -> None:
    headers = {"Authorization": "Bearer sécret".encode()}
    response = guarded.get("/api/runs", headers=headers)  # type: ignore[arg-type]
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert guarded.post("/api/session", json={"token": "sécret"}).status_code in (401, 403)


def test_the_token_in_a_url_is_not_accepted(guarded: TestClient) -> None:
    assert guarded.get("/api/runs", params={"token": TOKEN}).status_code == 401
    assert guarded.get("/api/runs", headers=bearer()).status_code == 200


def test_login_sets_an_httponly_strict_cookie_that_authenticates(guarded: TestClient) -> None:
    wrong = guarded.post("/api/session", json={"token": "nope"}, headers={"Origin": ORIGIN})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    assert guarded.get("/api/session").json() == {"token_required": True, "authenticated": False}
    response = guarded.post("/api/session", json={"token": TOKEN}, headers={"Origin": ORIGIN})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("trainlens_session=") and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert guarded.get("/api/session").json()["authenticated"] is True
    # The browser's requests now carry the cookie: reads, CSV downloads, writes.
    run_id = launched_run(guarded, headers={"Origin": ORIGIN})
    assert guarded.get(f"/api/runs/{run_id}").status_code == 200
    assert guarded.get(f"/api/runs/{run_id}/metrics.csv").status_code == 200
    # A forged or tampered cookie is not a session.
    guarded.cookies.clear()
    guarded.cookies.set("trainlens_session", "99999999999.deadbeef")
    assert guarded.get("/api/runs").status_code == 401
    login(guarded)
    logout = {"Origin": ORIGIN, "Content-Type": "application/json"}
    assert guarded.delete("/api/session", headers=logout).status_code == 204
    assert guarded.get("/api/runs").status_code == 401


def test_a_new_token_ends_old_sessions(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"token": TOKEN}))) as client:
        login(client)
        cookie = client.cookies["trainlens_session"]
    with TestClient(create_app(settings.model_copy(update={"token": "another"}))) as client:
        client.cookies.set("trainlens_session", cookie)
        assert client.get("/api/runs").status_code == 401


def test_the_stream_authenticates_with_the_session_cookie(tmp_path: Path, sqlite_url: str) -> None:
    server = LiveServer(tmp_path / "live", sqlite_url, extra_env={"TRAINLENS_TOKEN": TOKEN})
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            run_id = create_external_run_with(client, bearer())
            url = f"/api/runs/{run_id}/stream"
            with client.stream("GET", url) as refused:
                assert refused.status_code == 401
            client.post("/api/session", json={"token": TOKEN}, headers={"Origin": server.url})
            with client.stream("GET", url) as stream:
                assert stream.status_code == 200
                first = next(stream.iter_lines())
                assert first.startswith(("event:", "id:", "retry:", ":"))
    finally:
        server.stop()
    assert TOKEN not in server.log_path.read_text()


def create_external_run_with(client: httpx.Client, headers: dict[str, str]) -> int:
    response = client.post("/api/runs", json={"name": "s", "source": "external"}, headers=headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


# -- cross-site requests ----------------------------------------------------------------


def test_a_cross_site_form_cannot_stop_a_run(client: TestClient) -> None:
    """The curl repro: Origin evil.example, a form body, no token configured."""
    run_id = launched_run(client)
    response = client.post(
        f"/api/runs/{run_id}/stop",
        content=b"a=1",
        headers={
            "Origin": "http://evil.example",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code == 403 and "evil.example" in response.json()["detail"]
    assert status_of(client, run_id) == "queued"
    # Without an Origin, the body types a cross-site form can send are still refused.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = client.post(
            f"/api/runs/{run_id}/stop", content=b"x", headers={"Content-Type": content_type}
        )
        assert response.status_code == 415, content_type
    assert status_of(client, run_id) == "queued"
    # The dashboard (same origin, JSON) and scripts (no Origin) still work.
    same_origin = {"Origin": ORIGIN, "Content-Type": "application/json"}
    assert client.post(f"/api/runs/{run_id}/stop", headers=same_origin).status_code == 200
    assert status_of(client, run_id) == "stopped"
    assert client.post(f"/api/runs/{run_id}/resume").status_code == 200


def test_resume_with_text_plain_is_refused(client: TestClient) -> None:
    run_id = launched_run(client)
    client.post(f"/api/runs/{run_id}/stop")
    response = client.post(
        f"/api/runs/{run_id}/resume", content=b"", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert status_of(client, run_id) == "stopped"


def test_a_session_cookie_needs_same_origin_and_json(guarded: TestClient) -> None:
    run_id = launched_run(guarded, headers=bearer())
    login(guarded)
    stop = f"/api/runs/{run_id}/stop"
    json_type = {"Content-Type": "application/json"}
    cross_site = {**json_type, "Origin": "http://evil.example"}
    assert guarded.post(stop, headers=cross_site).status_code == 403
    assert guarded.post(stop, headers=json_type).status_code == 403  # no Origin, no Referer
    foreign_referer = {**json_type, "Referer": "http://evil.example/page"}
    assert guarded.post(stop, headers=foreign_referer).status_code == 403
    form = {"Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded"}
    assert guarded.post(stop, content=b"a=1", headers=form).status_code == 415
    assert status_of(guarded, run_id) == "queued"
    referer = {**json_type, "Referer": f"{ORIGIN}/run.html?id={run_id}"}
    assert guarded.post(stop, headers=referer).status_code == 200
    assert status_of(guarded, run_id) == "stopped"


def test_the_bearer_header_needs_no_origin(guarded: TestClient) -> None:
    run_id = launched_run(guarded, headers=bearer())
    assert guarded.post(f"/api/runs/{run_id}/stop", headers=bearer()).status_code == 200


# -- Host allowlist ---------------------------------------------------------------------


def app_with(settings: Settings, **update: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=update)))


def test_foreign_host_headers_are_refused_by_default(tmp_path: Path, sqlite_url: str) -> None:
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, allowed_hosts=[])
    assert settings.effective_allowed_hosts == ["localhost", "127.0.0.1", "[::1]"]
    with TestClient(create_app(settings)) as client:
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST."):
            assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
        for path in ("/healthz", "/api/runs", "/"):
            response = client.get(path, headers={"Host": "evil.example"})
            assert response.status_code == 400
            assert "TRAINLENS_ALLOWED_HOSTS" in response.json()["detail"]


def test_allowed_hosts_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str
) -> None:
    monkeypatch.setenv("TRAINLENS_ALLOWED_HOSTS", "gpu-box.lan, .example.org")
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url)
    assert settings.allowed_hosts == ["gpu-box.lan", ".example.org"]
    with TestClient(create_app(settings)) as client:
        for host, status in (
            ("gpu-box.lan:8000", 200),
            ("train.example.org", 200),
            ("example.org", 200),
            ("localhost", 200),
            ("badexample.org", 400),
            ("evil.example", 400),
        ):
            assert client.get("/healthz", headers={"Host": host}).status_code == status, host
    # The configured host is served beside the loopback names.
    monkeypatch.delenv("TRAINLENS_ALLOWED_HOSTS")
    assert "10.1.2.3" in Settings(host="10.1.2.3").effective_allowed_hosts
    assert "0.0.0.0" not in Settings(host="0.0.0.0").effective_allowed_hosts


# -- body size --------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_and_writes_nothing(settings: Settings) -> None:
    with app_with(settings, max_body_mb=0.5) as client:
        run_id = create_external_run(client)
        rows = [{"step": s, "metrics": {"train/loss": 1.0}} for s in range(20_000)]
        response = client.post(f"/api/runs/{run_id}/metrics", json={"rows": rows})
        assert response.status_code == 413
        assert "TRAINLENS_MAX_BODY_MB" in response.json()["detail"]
        # Chunked (no Content-Length): refused as the body streams in.
        chunks = (b'{"rows": [' + b" " * 100_000 for _ in range(10))
        json_type = {"Content-Type": "application/json"}
        response = client.post(f"/api/runs/{run_id}/metrics", content=chunks, headers=json_type)
        assert response.status_code == 413
        assert client.get(f"/api/runs/{run_id}").json()["last_step"] is None
        # Dataset uploads have their own, larger limit.
        text = "hello world\n" * 60_000  # 720 kB
        response = client.post("/api/datasets", json={"name": "big", "text": text})
        assert response.status_code == 201, response.text


def test_the_413_comes_before_the_body_is_read(live_server: LiveServer) -> None:
    """A declared 1 GB body is refused at once: the server reads none of it."""
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{"
        )
        started = time.monotonic()
        reply = sock.recv(65536)
        elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert elapsed < 5


# -- serve --------------------------------------------------------------------------------


def serve_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", "serve", "--no-worker", "--host", "0.0.0.0", *extra]


def serve_env(tmp_path: Path, sqlite_url: str, port: int) -> dict[str, str]:
    env = {**os.environ, "TRAINLENS_DATABASE_URL": sqlite_url, "TRAINLENS_PORT": str(port)}
    env["TRAINLENS_DATA_DIR"] = str(tmp_path)
    env.pop("TRAINLENS_TOKEN", None)
    return env


def test_serve_on_a_network_address_without_a_token_refuses(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = serve_env(tmp_path, sqlite_url, free_port())
    result = subprocess.run(
        serve_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "TRAINLENS_TOKEN" in result.stderr and "secrets.token_urlsafe(32)" in result.stderr
    env["TRAINLENS_TOKEN"] = ""  # empty is no token
    result = subprocess.run(
        serve_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2


def test_insecure_no_auth_serves_and_says_so(tmp_path: Path, sqlite_url: str) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            serve_command("--insecure-no-auth", "--log-level", "warning"),
            cwd=ROOT,
            env=serve_env(tmp_path, sqlite_url, port),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                pytest.fail(log.read_text())
        finally:
            process.terminate()
            process.wait(timeout=15)
    assert "WITHOUT A TOKEN" in log.read_text()
