"""Browser fixtures: Debian's headless Chromium driven by Playwright (sync API), pages
that fail their test on any console error, and live servers to point them at.

Playwright cannot download its own browser here, so the system Chromium is launched
through `executable_path`. Without a Chromium the browser tests skip, unless
TRAINLENS_REQUIRE_BROWSER is set (CI sets it): then they fail.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.migrations import upgrade_to_head
from tests.conftest import ROOT, LiveServer

ARTIFACTS = ROOT / "test-artifacts"
REQUIRE_BROWSER = os.environ.get("TRAINLENS_REQUIRE_BROWSER", "") not in ("", "0")
# Without the background-networking flags Chromium keeps trying to reach Google's
# services and floods a closed network with refused connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 1000}


def find_chromium() -> str | None:
    """TRAINLENS_CHROMIUM when set (and then only it), else Debian's chromium."""
    explicit = os.environ.get("TRAINLENS_CHROMIUM")
    candidates = (
        [explicit]
        if explicit
        else ["/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")]
    )
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _unavailable(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason}, and TRAINLENS_REQUIRE_BROWSER is set: the browser tests must run")
    pytest.skip(f"{reason} (set TRAINLENS_REQUIRE_BROWSER=1 to make this a failure)")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    executable = find_chromium()
    if executable is None:
        _unavailable("no Chromium found (apt-get install chromium, or set TRAINLENS_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed")
    with sync_playwright() as playwright:
        # launch() gives every run a fresh temporary user-data-dir.
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@dataclass
class UI:
    """A page plus what its console said. Any console error fails the test, except those
    a test declares expected (a server restart makes the browser log refused connections)."""

    page: object
    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
        return path


@pytest.fixture
def ui(browser: object) -> Iterator[UI]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(15_000)
    watcher = UI(page)

    def on_console(message: object) -> None:
        if message.type == "error":  # type: ignore[attr-defined]
            location = message.location.get("url", "")  # type: ignore[attr-defined]
            watcher.errors.append(f"console error: {message.text} ({location})")  # type: ignore[attr-defined]

    page.on("console", on_console)
    page.on("pageerror", lambda error: watcher.errors.append(f"uncaught: {error}"))
    yield watcher
    context.close()
    unexpected = watcher.unexpected_errors()
    assert not unexpected, "the page logged errors:\n" + "\n".join(unexpected)


def start_server(data_dir: Path, database_url: str, **kwargs: object) -> LiveServer:
    server = LiveServer(data_dir, database_url, **kwargs)  # type: ignore[arg-type]
    try:
        server.wait_ready()
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One live server (SQLite, no worker) for the tests that only add their own runs."""
    root = tmp_path_factory.mktemp("ui-server")
    url = f"sqlite:///{root / 'trainlens.db'}"
    upgrade_to_head(url)
    server = start_server(root / "data", url)
    yield server
    server.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A live server of the test's own (for restarts and big data sets)."""
    url = f"sqlite:///{tmp_path / 'trainlens.db'}"
    upgrade_to_head(url)
    server = start_server(tmp_path / "data", url)
    yield server
    server.stop()


def restart(server: LiveServer, data_dir: Path) -> LiveServer:
    """Stop a server and start a new one on the same port and database."""
    port = server.port
    server.stop()
    again = LiveServer(data_dir, server.database_url, extra_env={"TRAINLENS_PORT": str(port)})
    again.port, again.url = port, server.url
    try:
        again.wait_ready()
    except Exception:
        again.stop()
        raise
    return again
