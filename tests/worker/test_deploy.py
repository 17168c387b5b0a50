"""docker-compose.yml and the Dockerfile say what a GPU box needs. No Docker engine
runs here: the files are checked as data, and the compose file by a real compose
implementation (Debian's `docker-compose config`; CI installs it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import ROOT

REQUIRE_COMPOSE = os.environ.get("TRAINLENS_REQUIRE_COMPOSE") == "1"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_api_and_worker_share_one_image_and_the_worker_only_the_api() -> None:
    compose = _compose()
    services = compose["services"]
    api, worker = services["api"], services["worker"]
    assert api["build"] == worker["build"] == "." and api["image"] == worker["image"]
    assert "trainlens-data:/data" in api["volumes"]
    # The worker reaches the database through the API: no database URL, its own disk.
    assert worker["volumes"] == ["trainlens-worker:/data"]
    assert "TRAINLENS_DATABASE_URL" not in worker["environment"]
    assert worker["command"] == ["trainlens", "worker", "--url", "http://api:8000"]
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"
    for service in (api, worker):
        assert service["environment"]["TRAINLENS_DATA_DIR"] == "/data"
        # Required: compose refuses to start without it (no silent empty token).
        assert service["environment"]["TRAINLENS_TOKEN"].startswith("${TRAINLENS_TOKEN:?")
    assert "serve" in api["command"] and "--no-worker" in api["command"]
    # Longer than Docker's 10 s: a stop must end in a checkpoint handed to the API.
    assert worker["stop_grace_period"] == "6m"


def test_migrations_run_once_before_the_services() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"][:2] == ["trainlens", "migrate"]
    assert "--wait" in services["migrate"]["command"]  # PostgreSQL may still be starting
    assert services["migrate"]["restart"] == "no"
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_health_checks() -> None:
    services = _compose()["services"]
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    worker_check = " ".join(services["worker"]["healthcheck"]["test"])
    alive_file = services["worker"]["environment"]["TRAINLENS_WORKER_ALIVE_FILE"]
    assert alive_file in worker_check
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"][1]


def test_worker_reserves_nvidia_gpus() -> None:
    devices = _compose()["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_postgres_profile() -> None:
    services = _compose()["services"]
    assert services["postgres"]["profiles"] == ["postgres"]
    compose_text = (ROOT / "docker-compose.yml").read_text()
    assert "postgresql+psycopg://" in compose_text and "COMPOSE_PROFILES=postgres" in compose_text


def test_dockerfile_uses_a_cuda_pytorch_base() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = next(line for line in dockerfile.splitlines() if line.startswith("ARG BASE_IMAGE="))
    assert "pytorch/pytorch" in base and "cuda" in base
    assert "FROM ${BASE_IMAGE}" in dockerfile
    assert "pip install -e ." in dockerfile and "HEALTHCHECK" in dockerfile
    for part in ("app", "trainer", "static", "alembic"):
        assert f"COPY {part} ./{part}" in dockerfile


def test_readme_explains_the_gpu_deploy() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "## Deploy on a GPU box" in readme
    assert "docker compose up" in readme and "nvidia-container-toolkit" in readme
    deploy = readme.split("## Deploy on a GPU box", 1)[1].split("\n## ", 1)[0]
    for needed in (
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        "TRAINLENS_ALLOWED_HOSTS",
        "TRAINLENS_WEBHOOK_ALLOWLIST",
    ):
        assert needed in deploy, needed


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("docker-compose")
    if executable is None:
        message = "docker-compose is not installed (apt-get install docker-compose)"
        if REQUIRE_COMPOSE:
            pytest.fail(f"{message}, but TRAINLENS_REQUIRE_COMPOSE=1")
        pytest.skip(message)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRAINLENS_")}
    return subprocess.run(
        [executable, "-f", str(ROOT / "docker-compose.yml"), "config"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_config_validates_and_requires_the_token() -> None:
    result = _compose_config({"TRAINLENS_TOKEN": "t0ken"})
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    for name in ("api", "worker", "migrate"):
        assert rendered["services"][name]["environment"]["TRAINLENS_TOKEN"] == "t0ken"
    worker_check = " ".join(rendered["services"]["worker"]["healthcheck"]["test"])
    assert "$(find /tmp/trainlens-worker.alive" in worker_check
    missing = _compose_config({})
    assert missing.returncode != 0
    assert "TRAINLENS_TOKEN" in missing.stderr and "secrets.token_urlsafe" in missing.stderr


def _base_torch_version() -> Version:
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^ARG BASE_IMAGE=pytorch/pytorch:(\d+\.\d+\.\d+)-cuda", dockerfile, re.M)
    assert match, "the base image must be a CUDA build of pytorch/pytorch:<version>"
    return Version(match.group(1))


def _torch_requirement() -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return next(req for req in requirements if req.name == "torch")


def test_the_image_torch_satisfies_the_project_floor() -> None:
    torch = _torch_requirement()
    # The trainer calls torch.nn.utils.get_total_norm and clip_grads_with_norm_,
    # which first shipped in torch 2.6.
    assert "get_total_norm" in (ROOT / "trainer" / "train.py").read_text()
    assert not torch.specifier.contains("2.5.1") and torch.specifier.contains("2.6.0")
    assert torch.specifier.contains(_base_torch_version()), (torch, _base_torch_version())
    assert torch.specifier.contains("2.13.0")  # the local CPU wheel


def test_the_container_runs_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "useradd" in dockerfile and "chown trainlens:trainlens /data" in dockerfile
    # The user is set before VOLUME, so a new named volume is owned by it.
    assert dockerfile.index("USER ") < dockerfile.index("VOLUME /data")


def test_the_image_health_check_asks_the_api() -> None:
    # /healthz fails (503) when the database cannot answer: tests/api/test_strict_input.py
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "urlopen('http://127.0.0.1:8000/healthz'" in dockerfile.split("HEALTHCHECK", 1)[1]
