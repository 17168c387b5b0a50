"""Dataset endpoints: upload, list, use in a run."""

from __future__ import annotations

import httpx

from app.config import Settings


def test_upload_list_and_launch_on_a_dataset(client: httpx.Client, settings: Settings) -> None:
    text = "To be, or not to be, that is the question.\n" * 200
    response = client.post("/api/datasets", json={"name": "hamlet", "text": text})
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["n_chars"] == len(text) and dataset["n_symbols"] == len(set(text))
    assert not dataset["builtin"]
    stored = list((settings.data_dir / "datasets").glob("hamlet-*.txt"))
    assert len(stored) == 1 and stored[0].read_text() == text

    listing = client.get("/api/datasets").json()
    assert listing[0]["builtin"] is True and listing[0]["name"] == "stdlib"
    assert listing[0]["n_chars"] > 100_000
    assert [d["name"] for d in listing[1:]] == ["hamlet"]

    run = client.post(
        "/api/runs", json={"config": {"dataset": "hamlet", "max_steps": 10, "warmup_steps": 1}}
    )
    assert run.status_code == 201 and run.json()["config"]["dataset"] == "hamlet"


def test_bad_uploads_are_refused(client: httpx.Client) -> None:
    assert client.post("/api/datasets", json={"name": "a", "text": "x"}).status_code == 201
    duplicate = client.post("/api/datasets", json={"name": "a", "text": "y"})
    assert duplicate.status_code == 409 and "exists" in duplicate.json()["detail"]
    for body, field in [
        ({"name": "../etc", "text": "x"}, "name"),
        ({"name": "ok", "text": ""}, "text"),
        ({"name": "stdlib", "text": "x"}, "name"),
        ({"text": "x"}, "name"),
    ]:
        response = client.post("/api/datasets", json=body)
        assert response.status_code == 422, body
        assert response.json()["detail"][0]["field"] == field
    assert [d["name"] for d in client.get("/api/datasets").json()] == ["stdlib", "a"]
