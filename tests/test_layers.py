"""Import directions, held by import-linter (contracts in pyproject.toml): the server
above the trainer above the client; the trainer never imports the server or SQLAlchemy
(it reaches the database only through the API); the API never imports torch; the
`trainlens` client needs only httpx."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CONTRACTS = 4


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("lint-imports")
    # The packages of `cwd`, not the installed (editable) ones; no cache left behind.
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(executable), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"Contracts: {CONTRACTS} kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("trainer/stats.py", "from app.db import Database", "The trainer never imports"),
        ("app/rules/stats.py", "import torch", "The API process never imports torch"),
        ("trainlens/wire.py", "import sqlalchemy", "The trainlens client needs only httpx"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    """The contracts are not vacuous: one forbidden import in a copy of the tree fails."""
    for package in ("app", "trainer", "trainlens"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout
