"""Decoding an ingest body: one C pass for a valid body, an exact field for a bad one.

msgspec decodes and checks a valid body into typed structs without building a dict per
value; metric names are checked once per distinct name, not once per row. Anything it
refuses is read again, slowly, by the pydantic models, which name the field and quote
the bad input. Bodies whose numbers are Python's JSON extensions NaN / Infinity (what
`json.dumps` writes by default) take that slower path too and are accepted as values.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import numpy as np
from pydantic import ValidationError

from app.errors import AppError, invalid, invalid_fields, quoted, validation_detail
from app.metrics.schemas import IngestRequest, WireRequest, WireRow, check_metric_name
from app.metrics.store import metric_names

_decoder = msgspec.json.Decoder(WireRequest)


def decode_rows(body: bytes, max_rows: int) -> list[WireRow]:
    try:
        rows = _decoder.decode(body).rows
    except msgspec.DecodeError:
        document = _lenient_json(body)
        try:
            rows = msgspec.convert(document, WireRequest).rows
        except msgspec.ValidationError as error:
            raise _precise(document, error) from None
    except msgspec.ValidationError as error:
        raise _precise(_lenient_json(body), error) from None
    if len(rows) > max_rows:
        raise invalid("rows", f"at most {max_rows} rows per request, got {len(rows)}")
    # msgspec reads a number beyond float64's range as an infinity.
    times = np.array([math.nan if row.time is None else row.time for row in rows])
    bad_times = np.flatnonzero(np.isinf(times))
    if len(bad_times):
        index = int(bad_times[0])
        raise invalid(f"rows[{index}].time", f"must be a finite number, got {rows[index].time}")
    problems = []
    for name in sorted(metric_names(rows)):
        try:
            check_metric_name(name)
        except ValueError as error:
            index = next(i for i, row in enumerate(rows) if name in row.metrics)
            problems.append((f"rows[{index}].metrics", f"metric name {quoted(name)} {error}"))
    if problems:
        raise invalid_fields(problems[:20])
    return rows


def _lenient_json(body: bytes) -> Any:
    try:
        # NaN / Infinity tokens become the wire strings, so they stay values and never
        # become a time or a step.
        return json.loads(body, parse_constant=lambda token: token)
    except (ValueError, RecursionError) as error:
        raise invalid("body", f"not valid JSON: {quoted(str(error), 80)}") from None


def _precise(document: Any, fallback: msgspec.ValidationError) -> AppError:
    try:
        IngestRequest.model_validate(document)
    except ValidationError as error:
        errors = error.errors(include_url=False)[:20]
        detail = validation_detail(errors, ("body",))  # type: ignore[arg-type]
        for item, raw in zip(detail, errors, strict=True):
            if "input" in raw and not isinstance(raw["input"], dict | list):
                item["msg"] += f" (got {quoted(raw['input'])})"
        return AppError(422, detail)
    # The two descriptions disagree (they should not): msgspec's own words, with its path.
    message = str(fallback)
    path = message.rsplit(" - at `$", 1)[-1].rstrip("`") if " - at `$" in message else ""
    return invalid(path.lstrip(".") or "body", message)
