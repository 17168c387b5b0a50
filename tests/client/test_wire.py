"""The client and the server judge metric names and values by one definition."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from app.metrics.schemas import IngestRow
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
    assert b'"a":1e+308' in row_line(0, {"a": 1e308, "b": 1e308}, 0.0)
