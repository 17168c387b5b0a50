"""JSON that stays valid RFC 8259: non-finite floats travel as "NaN", "Infinity", "-Infinity"."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

NONFINITE_STRINGS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


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
    raise ValueError('must be a number or one of "NaN", "Infinity", "-Infinity"')


def sanitize(value: Any) -> Any:
    """Replace non-finite floats anywhere inside lists/dicts by their strings, and numpy
    scalars by Python numbers."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return encode_float(value)
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(sanitize(value), allow_nan=False, separators=(",", ":"))
