"""Input rules every endpoint shares: integer ids within the database's range, names
without control characters, and JSON documents the database can store as sent."""

from __future__ import annotations

import math
import unicodedata
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator
from sqlalchemy import BigInteger, ColumnElement

from app.models import Event, Finding, Run

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def column_max(column: ColumnElement[Any]) -> int:
    """The largest value an integer column holds on every supported database: Integer
    is 32-bit on PostgreSQL (SQLite's are all 64-bit)."""
    return INT64_MAX if isinstance(column.type, BigInteger) else INT32_MAX


def _id_column_max(column: ColumnElement[Any]) -> int:
    variants = getattr(column.type, "_variant_mapping", {})
    postgres = variants.get("postgresql")
    if postgres is not None:
        return INT64_MAX if isinstance(postgres, BigInteger) else INT32_MAX
    return column_max(column)


RUN_ID_MAX = _id_column_max(Run.__table__.c.id)
FINDING_ID_MAX = _id_column_max(Finding.__table__.c.id)
EVENT_ID_MAX = _id_column_max(Event.__table__.c.id)

RunId = Annotated[int, Path(ge=1, le=RUN_ID_MAX, description="a run's id")]
FindingId = Annotated[int, Path(ge=1, le=FINDING_ID_MAX, description="a finding's id")]
# OFFSET and step comparisons take a signed 64-bit integer on both databases.
Offset = Annotated[int, Query(ge=0, le=INT64_MAX)]
StepBound = Annotated[int, Query(ge=0, le=INT64_MAX)]


def control_characters(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def _plain_name(text: str) -> str:
    if control_characters(text):
        raise ValueError("must not contain control characters")
    return text


def _storable_text(text: str) -> str:
    # PostgreSQL text and JSONB cannot hold NUL, and SQLite would store it silently.
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


# A name shown in lists, logs and file names: no NUL, newline or other control character.
PlainName = Annotated[str, AfterValidator(_plain_name)]
# Free text (errors, samples): line breaks and tabs are fine, NUL is not.
StorableText = Annotated[str, AfterValidator(_storable_text)]


# Deeper documents cannot be serialized back (pydantic stops at a few hundred levels).
MAX_DOCUMENT_DEPTH = 64


def document_problems(value: Any, path: str, depth: int = 0) -> list[tuple[str, str]]:
    """(field, reason) for every part of a JSON document the API refuses to store:
    non-finite numbers (the raw NaN / Infinity tokens, which are not JSON and would come
    back as null), NUL characters in keys or strings, and nesting past 64 levels."""
    problems: list[tuple[str, str]] = []
    if depth > MAX_DOCUMENT_DEPTH:
        problems.append((path, f"nested more than {MAX_DOCUMENT_DEPTH} levels deep"))
    elif isinstance(value, float) and not math.isfinite(value):
        problems.append((path, "must be a finite number (NaN and Infinity are not JSON)"))
    elif isinstance(value, str) and "\x00" in value:
        problems.append((path, "must not contain NUL characters"))
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                problems.append((path, "keys must not contain NUL characters"))
                continue
            problems += document_problems(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems += document_problems(item, f"{path}[{index}]", depth + 1)
    return problems
