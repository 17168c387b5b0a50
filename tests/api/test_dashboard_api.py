"""What the dashboard needs from the API: rename, tags and notes; the runs table's
filters, sort and columns; queue position and phase; the output log; checkpoints; the
failed run's error line and a Resume refused when the failure would repeat; 404s."""

from __future__ import annotations

import json

import httpx

from app.config import Settings
from app.models import RunStatus
from tests.api.helpers import OOM_TRACEBACK, create_external_run, ingest, set_run_status


def _launch(client: httpx.Client, **body: object) -> dict[str, object]:
    response = client.post("/api/runs", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _set_status(settings: Settings, run_id: int, status: RunStatus, error: str | None) -> None:
    set_run_status(settings.resolved_database_url, run_id, status, error)


def test_rename_tags_and_notes(client: httpx.Client) -> None:
    run_id = create_external_run(client, "before")
    response = client.patch(
        f"/api/runs/{run_id}",
        json={"name": "after", "tags": ["baseline", "lr-sweep", "baseline"], "notes": "warm"},
    )
    assert response.status_code == 200, response.text
    run = response.json()
    assert (run["name"], run["tags"], run["notes"]) == ("after", ["baseline", "lr-sweep"], "warm")
    # Fields left out stay as they are.
    again = client.patch(f"/api/runs/{run_id}", json={"notes": "cooled"}).json()
    assert (again["name"], again["tags"], again["notes"]) == (
        "after",
        ["baseline", "lr-sweep"],
        "cooled",
    )
    bad = client.patch(f"/api/runs/{run_id}", json={"tags": ["a,b"]})
    assert bad.status_code == 422 and "tags" in bad.text
    assert client.patch(f"/api/runs/{run_id}", json={"colour": "red"}).status_code == 422
    assert client.patch("/api/runs/99999", json={"name": "x"}).status_code == 404
    assert client.get(f"/api/runs/{run_id}").json()["name"] == "after"


def test_default_names_tell_runs_of_one_preset_apart(client: httpx.Client) -> None:
    first = _launch(client, preset="healthy")
    second = _launch(client, preset="healthy", config={"lr": 0.01})
    assert first["name"] != second["name"]
    assert str(first["name"]).startswith(f"healthy-{first['id']}")
    assert "lr 0.01" in str(second["name"])
    external = create_external_run(client, "")
    assert client.get(f"/api/runs/{external}").json()["name"] == f"external-{external}"


def test_filter_and_sort_by_config_keys_and_latest_metrics(client: httpx.Client) -> None:
    ids = {}
    for name, lr, val in (("slow", 1e-4, 1.9), ("mid", 1e-3, 1.5), ("fast", 3e-3, 1.2)):
        ids[name] = create_external_run(client, name, lr=lr, faults={"nan_step": 7})
        ingest(client, ids[name], [{"step": 0, "metrics": {"val/loss": val, "train/loss": 2.0}}])
    create_external_run(client, "no-metrics", lr=5e-3)

    def names(**params: object) -> list[str]:
        response = client.get("/api/runs", params=params)
        assert response.status_code == 200, response.text
        return [run["name"] for run in response.json()["runs"]]

    assert set(names(filter="lr > 1e-3")) == {"fast", "no-metrics"}
    assert names(filter=["val/loss < 1.6", "lr >= 1e-3"], sort="val/loss") == ["fast", "mid"]
    assert names(sort="-val/loss")[:3] == ["slow", "mid", "fast"]
    assert names(sort="val/loss")[-1] == "no-metrics"  # missing values last
    assert names(filter="faults.nan_step = 7", sort="lr") == ["slow", "mid", "fast"]
    assert names(filter="name ~ MI") == ["mid"]
    paged = client.get("/api/runs", params={"sort": "lr", "limit": 2, "offset": 1}).json()
    assert [r["name"] for r in paged["runs"]] == ["mid", "fast"] and paged["total"] == 4
    bad = client.get("/api/runs", params={"filter": "lr >"})
    assert bad.status_code == 422 and "filter" in bad.text
    # Chosen metric columns come with the summaries; config is always there.
    listed = client.get("/api/runs", params={"metrics": "val/loss"}).json()["runs"]
    by_name = {run["name"]: run for run in listed}
    assert by_name["mid"]["latest"]["val/loss"]["value"] == 1.5
    assert by_name["mid"]["config"]["lr"] == 1e-3
    columns = client.get("/api/runs/columns").json()
    assert "faults.nan_step" in columns["config"] and "lr" in columns["config"]
    assert "val/loss" in columns["metrics"]


def test_filter_by_tag(client: httpx.Client) -> None:
    tagged = create_external_run(client, "tagged")
    create_external_run(client, "untagged")
    client.patch(f"/api/runs/{tagged}", json={"tags": ["baseline"]})
    names = [
        r["name"]
        for r in client.get("/api/runs", params={"filter": "tags = baseline"}).json()["runs"]
    ]
    assert names == ["tagged"]
    assert client.get("/api/runs/columns").json()["tags"] == ["baseline"]


def test_a_word_that_reads_as_a_float_is_matched_as_a_word(client: httpx.Client) -> None:
    """The fault preset "nan" (float("nan") parses): `preset = nan` finds its runs,
    quoted or not, and a run named "inf" sorts by its name, not as a missing value."""
    faulty = _launch(client, preset="nan", name="inf")["id"]
    _launch(client, preset="healthy", name="zeta")

    def ids(**params: str) -> list[int]:
        return [r["id"] for r in client.get("/api/runs", params=params).json()["runs"]]

    for condition in ("preset = nan", "preset = 'nan'", 'preset = "nan"', "preset == NaN"):
        assert ids(filter=condition) == [faulty], condition
    assert faulty not in ids(filter="preset != nan")
    assert ids(sort="name")[0] == faulty  # "inf" before "zeta"


def test_queue_position_and_phase(client: httpx.Client, settings: Settings) -> None:
    first = _launch(client, preset="healthy")
    second = _launch(client, preset="healthy")
    assert (first["queue_position"], second["queue_position"]) == (1, 2)
    assert second["phase"] == "waiting for a worker"
    _set_status(settings, int(first["id"]), RunStatus.running, None)
    assert client.get(f"/api/runs/{second['id']}").json()["queue_position"] == 1
    started = client.get(f"/api/runs/{first['id']}").json()
    assert started["queue_position"] is None and started["phase"].startswith("starting")
    log = settings.runs_dir / str(first["id"]) / "output.log"
    log.parent.mkdir(parents=True)
    log.write_text(
        "2026-12-02 07:00:00,1 trainlens.job loading dataset shakespeare_char\n"
        "2026-12-02 07:00:03,366 trainer.train building the model\n"
    )
    assert client.get(f"/api/runs/{first['id']}").json()["phase"] == "building the model"


def test_log_tail_and_follow(client: httpx.Client, settings: Settings) -> None:
    run = _launch(client, preset="healthy")
    run_id = run["id"]
    empty = client.get(f"/api/runs/{run_id}/log").json()
    assert empty["exists"] is False and empty["text"] == ""
    log = settings.runs_dir / str(run_id) / "output.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    tail = client.get(f"/api/runs/{run_id}/log", params={"limit": 100}).json()
    assert tail["text"].endswith("line 999\n") and tail["text"].startswith("line ")
    assert tail["next_offset"] == log.stat().st_size
    with log.open("a") as handle:
        handle.write("step 1 done\n")
    more = client.get(f"/api/runs/{run_id}/log", params={"offset": tail["next_offset"]}).json()
    assert more["text"] == "step 1 done\n"
    assert client.get("/api/runs/99999/log").status_code == 404


def test_checkpoints_listed_and_downloadable(client: httpx.Client, settings: Settings) -> None:
    run_id = _launch(client, preset="healthy")["id"]
    directory = settings.runs_dir / str(run_id)
    directory.mkdir(parents=True)
    (directory / "ckpt_latest.pt").write_bytes(b"x" * 1234)
    (directory / "ckpt_latest.json").write_text(json.dumps({"step": 200, "val_loss": 1.61}))
    (directory / "ckpt_best.pt").write_bytes(b"y" * 10)
    (directory / ".ckpt_best.pt.tmp99").write_bytes(b"partial")
    listing = client.get(f"/api/runs/{run_id}/checkpoints").json()
    by_name = {c["name"]: c for c in listing}
    assert set(by_name) == {"ckpt_latest.pt", "ckpt_best.pt"}
    latest = by_name["ckpt_latest.pt"]
    assert (latest["step"], latest["val_loss"], latest["size_bytes"]) == (200, 1.61, 1234)
    assert by_name["ckpt_best.pt"]["step"] is None  # no info file: unknown, not invented
    download = client.get(latest["url"])
    assert download.status_code == 200 and download.content == b"x" * 1234
    assert f"run-{run_id}-ckpt_latest.pt" in download.headers["content-disposition"]
    assert client.get(f"/api/runs/{run_id}/checkpoints/output.log").status_code == 422
    assert client.get(f"/api/runs/{run_id}/checkpoints/..%2Fx.pt").status_code in (404, 422)
    assert client.get(f"/api/runs/{run_id}/checkpoints/missing.pt").status_code == 404


def test_failed_run_error_line_and_resume_refused(client: httpx.Client, settings: Settings) -> None:
    run_id = int(_launch(client, preset="healthy")["id"])
    _set_status(settings, run_id, RunStatus.running, None)
    _set_status(settings, run_id, RunStatus.failed, OOM_TRACEBACK)
    run = client.get(f"/api/runs/{run_id}").json()
    assert (
        run["error_line"].startswith("RuntimeError:") and "800008000000 bytes" in run["error_line"]
    )
    assert "would fail the same way" in run["resume_blocked"]
    refused = client.post(f"/api/runs/{run_id}/resume")
    assert refused.status_code == 409 and "800008000000" in refused.json()["detail"]
    # A crash that is not the config's doing may be resumed.
    other = int(_launch(client, preset="healthy")["id"])
    _set_status(settings, other, RunStatus.running, None)
    _set_status(settings, other, RunStatus.failed, "exit code -9\nKilled")
    detail = client.get(f"/api/runs/{other}").json()
    assert detail["error_line"] == "Killed" and detail["resume_blocked"] is None
    assert client.post(f"/api/runs/{other}/resume").status_code == 200


def test_html_404_for_pages_json_for_api(client: httpx.Client) -> None:
    page = client.get("/no-such-page", headers={"accept": "text/html"})
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "Page not found" in page.text
    api = client.get("/api/no-such-thing")
    assert api.status_code == 404 and api.json()["detail"].startswith("API path")
    assert client.get("/redoc").status_code == 404
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
