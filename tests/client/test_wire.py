"""The client and the server judge metric names and values by one definition."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from pydantic import ValidationError

from app.metrics.schemas import IngestRow
from tests.conftest import ROOT
from trainlens import wire
from trainlens.wire import metric_name_error, metric_value, row_line

NAMES = [
    "train/loss",
    "act/h0.mlp/std",
    "ünïcode/λ",
    "x" * 255,
    "x" * 256,
    "",
    "eval acc",
    "a,b",
    "tab\there",
    "trailing\n",
    "nbsp\u00a0inside",
    "nul\x00",
    "bell\x07",
    "del\x7f",
]


@pytest.mark.parametrize("name", NAMES)
def test_client_and_server_agree_on_every_name(name: str) -> None:
    try:
        IngestRow(step=0, metrics={name: 1.0})
        server_accepts = True
    except ValidationError:
        server_accepts = False
    assert (metric_name_error(name) is None) == server_accepts


@pytest.mark.parametrize("value", [1, 2.5, "NaN", "Infinity", "-Infinity", 10**20])
def test_every_value_the_client_passes_the_server_takes(value: object) -> None:
    number = metric_value("k", value)
    line = row_line(3, {"k": number}, 1.0)
    parsed = IngestRow.model_validate_json(line)
    assert parsed.metrics["k"] == number or (math.isnan(number) and math.isnan(parsed.metrics["k"]))


def test_a_row_line_keeps_non_finite_values_valid_json() -> None:
    line = row_line(7, {"a": math.nan, "b": -math.inf, "c": 1.5}, 2.0)
    assert line == b'{"step":7,"metrics":{"a":"NaN","b":"-Infinity","c":1.5},"time":2.0}\n'
    # a sum that overflows is not mistaken for a non-finite value's absence
    overflowing = json.loads(row_line(0, {"a": 1e308, "b": 1e308}, 0.0))
    assert overflowing["metrics"] == {"a": 1e308, "b": 1e308}


TRICKY = [0.1, -0.0, 5e-324, 2.2250738585072014e-308, 1e308, 1 / 3, 1e16, 1e-7, 123456789.125]


def test_rows_encode_to_the_same_numbers_with_and_without_orjson() -> None:
    """orjson is optional: the standard library's encoder must give the same values."""
    metrics = {str(i): value for i, value in enumerate(TRICKY)}
    code = (
        "import sys\n"
        "sys.modules['orjson'] = None  # as if it were not installed\n"
        "from trainlens import wire\n"
        "assert wire.orjson is None\n"
        f"sys.stdout.buffer.write(wire.row_line(2**53, {metrics!r}, 1.7e9))\n"
    )
    plain = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=True
    ).stdout
    fast = row_line(2**53, metrics, 1.7e9)
    assert wire.orjson is not None  # installed with the project
    for line in (plain, fast):
        row = json.loads(line)
        assert row["step"] == 2**53 and row["time"] == 1.7e9
        assert [row["metrics"][str(i)] for i in range(len(TRICKY))] == TRICKY
    assert math.copysign(1, json.loads(fast)["metrics"]["1"]) == -1  # -0.0 stays negative
