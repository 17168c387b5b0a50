"""docker-compose.yml and the Dockerfile say what a GPU box needs (no Docker engine
runs here, so the files are checked as data)."""

from __future__ import annotations

from typing import Any

import yaml

from tests.conftest import ROOT


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_api_and_worker_share_one_image_and_a_named_volume() -> None:
    compose = _compose()
    services = compose["services"]
    api, worker = services["api"], services["worker"]
    assert api["build"] == worker["build"] == "." and api["image"] == worker["image"]
    assert "trainlens-data" in compose["volumes"]
    for service in (api, worker):
        assert "trainlens-data:/data" in service["volumes"]
        assert service["environment"]["TRAINLENS_DATA_DIR"] == "/data"
        assert "TRAINLENS_TOKEN" in service["environment"]
    assert "serve" in api["command"] and "--no-worker" in api["command"]
    assert worker["command"] == ["trainlens", "worker"]


def test_migrations_run_once_before_the_services() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["trainlens", "migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        assert (
            services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )


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
    assert services["migrate"]["depends_on"]["postgres"]["required"] is False
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
