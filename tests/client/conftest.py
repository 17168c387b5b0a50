"""Fixtures for the client's tests: a live server and helpers to read a run back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, LiveServer


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def series(server: LiveServer, run_id: int, key: str) -> tuple[list[int], list[Any]]:
    answer = httpx.get(
        f"{server.url}/api/runs/{run_id}/metrics",
        params={"keys": key, "max_points": 200_000},
    ).json()["series"][key]
    assert not answer["downsampled"]
    return answer["steps"], answer["values"]


def run_detail(server: LiveServer, run_id: int) -> dict[str, Any]:
    return httpx.get(f"{server.url}/api/runs/{run_id}").json()


def all_runs(server: LiveServer) -> list[dict[str, Any]]:
    return httpx.get(f"{server.url}/api/runs", params={"limit": 500}).json()["runs"]


def trainlens_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`trainlens ...` in a fresh interpreter, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "trainlens.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_folders(parent: Path) -> list[Path]:
    return sorted(path for path in parent.iterdir() if (path / "run.json").exists())
