"""What a metric is on the wire: the one definition of metric-name rules, value checks
and the float encoding, shared by the client (`trainlens.log`) and the server
(`app/metrics/schemas.py`, `app/jsonutil.py`), so a row the client accepts is a row the
server accepts.

Non-finite floats travel as the strings "NaN", "Infinity", "-Infinity": every body stays
valid RFC 8259 JSON. Standard library only (the client's import must stay light).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Mapping
from typing import Any

try:
    # orjson (installed with the project; the client runs without it) encodes a row of
    # arbitrary doubles in a third of json's time, in the same shortest round-trip form.
    import orjson
except ImportError:  # test_wire checks this path in a subprocess
    orjson = None  # type: ignore[assignment]

# A metric name: 1 to 255 characters, no whitespace, comma or control character (commas
# separate keys in `?keys=a,b`; whitespace is almost always a typo such as "eval acc";
# PostgreSQL cannot store NUL, and the other control characters break CSV and logs).
METRIC_NAME_MAX_LENGTH = 255
METRIC_NAME_PATTERN = r"^[^\s,\x00-\x1f\x7f-\x9f]+$"
_METRIC_NAME = re.compile(METRIC_NAME_PATTERN)

# Steps travel through float64 arrays on the way out, exact up to 2**53.
MAX_STEP = 2**53

NONFINITE_STRINGS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
NUMBER_HINT = 'must be a number or one of "NaN", "Infinity", "-Infinity"'


def encode_float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def decode_float(value: float | int | str) -> float:
    """A number, or one of the three non-finite strings; anything else raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in NONFINITE_STRINGS:
        return NONFINITE_STRINGS[value]
    raise ValueError(NUMBER_HINT)


def metric_name_error(name: object) -> str | None:
    """Why `name` is not a valid metric name, or None when it is."""
    if not isinstance(name, str):
        return f"a metric name must be a string, not {type(name).__name__}"
    if not name:
        return "a metric name must not be empty"
    if len(name) > METRIC_NAME_MAX_LENGTH:
        return f"a metric name has at most {METRIC_NAME_MAX_LENGTH} characters"
    # fullmatch: `$` alone would let a trailing newline through.
    if _METRIC_NAME.fullmatch(name) is None:
        return "a metric name must not contain whitespace, commas or control characters"
    return None


def check_metric_name(name: object) -> str:
    error = metric_name_error(name)
    if error is not None:
        raise ValueError(f"metric {_quote(name)}: {error}")
    return name  # type: ignore[return-value]


def metric_value(key: str, value: Any) -> float:
    """`value` as a float, or a TypeError/ValueError naming `key`.

    Numbers of any kind that know how to become a float are accepted (numpy scalars,
    0-d torch tensors, Decimal) without importing their libraries; booleans, None and
    strings other than the three non-finite words are refused."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if value is None or isinstance(value, bool) or kind.__name__ == "bool_":
        raise TypeError(f"metric {_quote(key)}: {NUMBER_HINT}, not {_quote(value)}")
    if isinstance(value, str):
        if value in NONFINITE_STRINGS:
            return NONFINITE_STRINGS[value]
        raise ValueError(f"metric {_quote(key)}: {NUMBER_HINT}, not {_quote(value)}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"metric {_quote(key)}: {_quote(value)} is too large") from None
    except (TypeError, ValueError, RuntimeError) as error:
        # e.g. a tensor with more than one element
        raise TypeError(
            f"metric {_quote(key)}: {NUMBER_HINT}, not {kind.__name__} ({error})"
        ) from None


def check_step(step: Any) -> int:
    """A step: an integer (numpy and torch integers too) from 0 to 2**53."""
    if isinstance(step, bool):
        raise TypeError("step must be an integer, not a boolean")
    try:
        number = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an integer, not {type(step).__name__}") from None
    if not 0 <= number <= MAX_STEP:
        raise ValueError(f"step must be between 0 and 2**53, not {number}")
    return number


def check_metrics(metrics: Any, known_names: set[str] | None = None) -> dict[str, float]:
    """Every key and value of one row checked and converted to floats; the first bad
    one raises, naming its key. `known_names` caches names already checked."""
    if not hasattr(metrics, "items"):
        kind = type(metrics).__name__
        raise TypeError(f"metrics must be a mapping of name to number, not {kind}")
    row: dict[str, float] = {}
    for key, value in metrics.items():
        if known_names is None or key not in known_names:
            check_metric_name(key)
            if known_names is not None:
                known_names.add(key)
        row[key] = value if type(value) is float else metric_value(key, value)
    if not row:
        raise ValueError("a row needs at least one metric")
    return row


_encode_json = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def _json_line(document: dict[str, Any]) -> bytes:
    if orjson is not None:
        return orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE)  # type: ignore[no-any-return]
    return (_encode_json(document) + "\n").encode()


def row_line(step: int, metrics: dict[str, float], time: float) -> bytes:
    """One row as `POST /api/runs/{id}/metrics` takes it, as a line of JSON."""
    total = sum(metrics.values())
    values: Mapping[str, float | str] = metrics
    # x - x is 0.0 only for finite x, so one sum (in C) clears the whole row; a row with
    # a non-finite value (or a sum that overflowed) has each value encoded.
    if total - total != 0:
        values = {k: v if v - v == 0 else encode_float(v) for k, v in metrics.items()}
    return _json_line({"step": step, "metrics": values, "time": time})


def _quote(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
