"""A tiny HTTP proxy in front of a live server that can misbehave on demand: drop
connections (server away), hang (slow server), or refuse batches holding a given step
with 422 (a server whose rules differ from the client's)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.conftest import free_port


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "ok"  # "ok" | "drop" | "hang"
        self.refuse_step: int | None = None
        self.hang_paths = "/metrics"  # what "hang" applies to
        self.release = threading.Event()  # ends every hang (teardown)
        self.posts: list[tuple[str, int]] = []  # (path, status answered)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                self._forward("GET", b"")

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                self._forward("POST", body)

            def do_DELETE(self) -> None:  # noqa: N802
                self._forward("DELETE", b"")

            def _forward(self, method: str, body: bytes) -> None:
                if proxy.mode == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if proxy.mode == "hang" and proxy.hang_paths in self.path:
                    proxy.release.wait(60)
                    self.close_connection = True
                    return
                if proxy.refuse_step is not None and self.path.endswith("/metrics"):
                    steps = [row["step"] for row in json.loads(body)["rows"]]
                    if proxy.refuse_step in steps:
                        self._answer(422, b'{"detail": "refused by the test proxy"}', method)
                        return
                headers = {"content-type": self.headers.get("content-type", "application/json")}
                answer = httpx.request(
                    method, proxy.upstream + self.path, content=body, headers=headers, timeout=30
                )
                self._answer(answer.status_code, answer.content, method)

            def _answer(self, status: int, content: bytes, method: str) -> None:
                if method == "POST":
                    proxy.posts.append((self.path, status))
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
