"""Full-resolution reads: long and wide CSV, Parquet, history pages. Every value comes
back bit for bit, NaN and infinities included."""

from __future__ import annotations

import csv
import io
import math

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from tests.api.helpers import create_external_run, ingest

# Values whose shortest repr matters, and the non-finite ones. (Not -0.0: SQLite stores
# a REAL that equals an integer as that integer, so its sign is the database's to lose.)
TRICKY = [0.1, 1e-300, 5e-324, 1.7976931348623157e308, 2.0 / 3.0, "NaN", "Infinity", "-Infinity"]
SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _expected() -> dict[str, dict[int, float]]:
    """loss at every step, lr every other step, val/loss every fifth: different step sets."""
    loss = {s: TRICKY[s % len(TRICKY)] for s in range(40)}
    lr = {s: 1e-3 * (s + 1) / 3 for s in range(0, 40, 2)}
    val = {s: -(s / 7) for s in range(0, 40, 5)}
    val[35] = "NaN"
    return {
        "train/loss": {s: SPECIAL.get(v, v) if isinstance(v, str) else v for s, v in loss.items()},
        "train/lr": lr,
        "val/loss": {s: SPECIAL.get(v, v) if isinstance(v, str) else v for s, v in val.items()},
    }


def _wire(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _load(client: httpx.Client) -> int:
    run_id = create_external_run(client)
    expected = _expected()
    steps = sorted({s for series in expected.values() for s in series})
    rows = [
        {
            "step": s,
            "metrics": {k: _wire(v[s]) for k, v in expected.items() if s in v},
            "time": 1.7e9 + s / 3,
        }
        for s in reversed(steps)  # arrival order must not matter
    ]
    assert ingest(client, run_id, rows).status_code == 200
    return run_id


def _same(a: float, b: float) -> bool:
    """Exact equality that treats NaN as equal to NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b


def _assert_series(got: dict[str, dict[int, float]]) -> None:
    expected = _expected()
    assert set(got) == set(expected)
    for key, series in expected.items():
        assert sorted(got[key]) == sorted(series), key
        for step, value in series.items():
            assert _same(got[key][step], value), (key, step, got[key][step], value)


def test_long_csv_round_trip(client: httpx.Client) -> None:
    run_id = _load(client)
    response = client.get(f"/api/runs/{run_id}/metrics.csv")
    assert response.status_code == 200
    assert f'filename="run-{run_id}-metrics-long.csv"' in response.headers["content-disposition"]
    reader = csv.DictReader(io.StringIO(response.text))
    assert reader.fieldnames == ["key", "step", "value", "wall_time"]
    got: dict[str, dict[int, float]] = {}
    for row in reader:
        got.setdefault(row["key"], {})[int(row["step"])] = float(row["value"])
        assert float(row["wall_time"]) == 1.7e9 + int(row["step"]) / 3
    _assert_series(got)


def test_wide_csv_round_trip(client: httpx.Client) -> None:
    run_id = _load(client)
    response = client.get(f"/api/runs/{run_id}/metrics.csv", params={"layout": "wide"})
    assert response.status_code == 200
    assert f'filename="run-{run_id}-metrics-wide.csv"' in response.headers["content-disposition"]
    reader = csv.DictReader(io.StringIO(response.text))
    assert reader.fieldnames == ["step", "wall_time", "train/loss", "train/lr", "val/loss"]
    got: dict[str, dict[int, float]] = {}
    steps = []
    for row in reader:
        step = int(row["step"])
        steps.append(step)
        assert float(row["wall_time"]) == 1.7e9 + step / 3
        for key in ("train/loss", "train/lr", "val/loss"):
            if row[key] != "":  # an empty cell: no point of that key at this step
                got.setdefault(key, {})[step] = float(row[key])
    assert steps == list(range(40))
    _assert_series(got)


def test_parquet_round_trip_long_and_wide(client: httpx.Client) -> None:
    run_id = _load(client)
    response = client.get(f"/api/runs/{run_id}/metrics.parquet")
    assert response.status_code == 200
    assert f'filename="run-{run_id}-metrics.parquet"' in response.headers["content-disposition"]
    table = pq.read_table(pa.BufferReader(response.content)).to_pylist()
    got: dict[str, dict[int, float]] = {}
    for row in table:
        got.setdefault(row["key"], {})[row["step"]] = row["value"]
    _assert_series(got)

    wide = client.get(f"/api/runs/{run_id}/metrics.parquet", params={"layout": "wide"})
    columns = pq.read_table(pa.BufferReader(wide.content)).to_pydict()
    assert columns["step"] == list(range(40))
    got = {
        key: {s: v for s, v in zip(columns["step"], columns[key], strict=True) if v is not None}
        for key in ("train/loss", "train/lr", "val/loss")
    }
    _assert_series(got)


def test_export_of_a_run_in_several_pages(client: httpx.Client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Pages join without a gap or a repeat (the page size is made tiny here)."""
    from app.metrics import export

    monkeypatch.setattr(export, "PAGE_POINTS", 7)
    run_id = _load(client)
    long_csv = client.get(f"/api/runs/{run_id}/metrics.csv").text
    long_rows = list(csv.DictReader(io.StringIO(long_csv)))
    assert len(long_rows) == sum(len(series) for series in _expected().values())
    parquet = client.get(f"/api/runs/{run_id}/metrics.parquet").content
    assert pq.read_table(pa.BufferReader(parquet)).num_rows == len(long_rows)


def test_csv_text_cells_cannot_run_as_formulas(client: httpx.Client) -> None:
    run_id = create_external_run(client)
    ingest(client, run_id, [{"step": 0, "metrics": {"=HYPERLINK(1)": 1.0, "-neg": -2.5}}])
    text = client.get(f"/api/runs/{run_id}/metrics.csv").text
    assert "'=HYPERLINK(1),0,1.0," in text and "'-neg,0,-2.5," in text
    header = client.get(f"/api/runs/{run_id}/metrics.csv", params={"layout": "wide"}).text
    assert header.splitlines()[0] == "step,wall_time,'-neg,'=HYPERLINK(1)"


def test_history_pages_through_every_step(client: httpx.Client) -> None:
    run_id = _load(client)
    got: dict[str, dict[int, float]] = {}
    start: int | None = 0
    pages = 0
    while start is not None:
        response = client.get(f"/api/runs/{run_id}/history", params={"start": start, "limit": 7})
        assert response.status_code == 200
        page = response.json()
        assert len(page["steps"]) <= 7 and page["keys"] == ["train/loss", "train/lr", "val/loss"]
        for key, column in page["columns"].items():
            for step, value in zip(page["steps"], column, strict=True):
                if value is not None:
                    got.setdefault(key, {})[step] = SPECIAL.get(value, value)
        start = page["next_start"]
        pages += 1
    assert pages == 6  # 40 steps, 7 a page
    _assert_series(got)

    window = client.get(
        f"/api/runs/{run_id}/history",
        params={"keys": "val/loss", "start": 5, "end": 20, "limit": 100},
    ).json()
    assert window["steps"] == [5, 10, 15, 20] and window["next_start"] is None
    assert window["columns"] == {"val/loss": [-5 / 7, -10 / 7, -15 / 7, -20 / 7]}
    assert client.get("/api/runs/999/history").status_code == 404
    assert client.get(f"/api/runs/{run_id}/history", params={"limit": 0}).status_code == 422
