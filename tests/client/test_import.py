"""`import trainlens` is light: httpx and the standard library, nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

HEAVY = ("torch", "numpy", "sqlalchemy", "pydantic", "fastapi", "app", "trainer")


def test_importing_the_client_loads_no_heavy_module(tmp_path: Path) -> None:
    code = (
        "import sys, trainlens, trainlens.cli, trainlens.sync, trainlens.system\n"
        "run = trainlens.init(mode='offline', offline_dir=sys.argv[1])\n"
        "run.log({'train/loss': 1.0})\n"
        "run.finish()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_command_hands_server_commands_to_the_server() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trainlens.cli", "migrate", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "--database-url" in result.stdout
    usage = subprocess.run(
        [sys.executable, "-m", "trainlens.cli"], cwd=ROOT, capture_output=True, text=True
    )
    assert usage.returncode == 2
    for command in ("serve", "worker", "migrate", "train", "sync"):
        assert f"  {command} " in usage.stderr
