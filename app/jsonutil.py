"""JSON that stays valid RFC 8259: non-finite floats travel as "NaN", "Infinity", "-Infinity"."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

# The one definition of the float wire encoding lives with the client (torch-free).
from trainlens.wire import NONFINITE_STRINGS, decode_float, encode_float

__all__ = ["NONFINITE_STRINGS", "decode_float", "dumps", "encode_float", "sanitize"]


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
