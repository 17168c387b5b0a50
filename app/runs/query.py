"""The runs table's filters and sort: `lr > 1e-3`, `val/loss < 1.6`, `tags ~ baseline`,
sort by `-val/loss`. A name with a slash is a metric (its latest value); `name`,
`status`, `preset`, `source`, `step`, `tags`, `notes` are the run's own fields; any other
name is a config key (dots reach into nested settings: `faults.nan_step`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from app.errors import invalid
from app.models import RunSource, RunStatus

RUN_FIELDS = ("name", "status", "preset", "source", "step", "tags", "notes", "created_at")
_FILTER = re.compile(
    r"^\s*(?P<name>[^<>=!~\s][^<>=!~]*?)\s*(?P<op>>=|<=|!=|==|=|>|<|~)\s*(?P<value>.*?)\s*$"
)
_NUMERIC_OPS = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}


@dataclass(frozen=True)
class Condition:
    name: str
    op: str
    value: str

    def matches(self, actual: Any) -> bool:
        if actual is None:
            return False
        if isinstance(actual, list):  # tags: any of them
            return any(self.matches(item) for item in actual)
        if self.op == "~":
            return self.value.lower() in str(actual).lower()
        number, wanted = as_number(actual), as_number(self.value)
        if self.op in _NUMERIC_OPS:
            if number is None or wanted is None:
                return False
            return bool(_NUMERIC_OPS[self.op](number, wanted))
        equal = (
            number == wanted
            if number is not None and wanted is not None
            else (str(actual).lower() == self.value.lower())
        )
        return equal if self.op in ("=", "==") else not equal


@dataclass(frozen=True)
class RunListSpec:
    """Which runs the table asks for, and which latest values it shows."""

    statuses: list[RunStatus] | None = None
    source: RunSource | None = None
    name_contains: str | None = None
    conditions: tuple[Condition, ...] = ()
    sort: tuple[str, bool] | None = None
    metric_columns: frozenset[str] = frozenset()

    def needs_values(self) -> bool:
        return bool(self.conditions or self.sort)


def is_metric(name: str) -> bool:
    return "/" in name


def parse_filters(filters: list[str]) -> list[Condition]:
    conditions = []
    for text in filters:
        match = _FILTER.match(text)
        if match is None or not match["value"]:
            raise invalid(
                "filter",
                f"cannot read {text[:80]!r}: write NAME OP VALUE with OP one of "
                "> >= < <= = != ~ (e.g. 'lr > 1e-3', 'val/loss < 1.6', 'tags ~ baseline')",
            )
        value = match["value"]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]  # quoted: 'nan', "my run"
        conditions.append(Condition(match["name"].strip(), match["op"], value))
    return conditions


def parse_sort(sort: str | None) -> tuple[str, bool] | None:
    """`-val/loss` → ("val/loss", descending)."""
    if not sort or not sort.strip("-+ "):
        return None
    sort = sort.strip()
    return sort.lstrip("-+").strip(), sort.startswith("-")


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:
        number = float(str(value))
    except ValueError:
        return None
    # Text that float() reads as NaN or infinity ("nan", "inf") is a word here, not a
    # number: the preset "nan" must match `preset = nan` and sort by its name.
    return number if math.isfinite(number) else None


def config_value(config: dict[str, Any], name: str) -> Any:
    value: Any = config
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def flat_config_keys(config: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        if isinstance(value, dict) and value:
            keys.extend(flat_config_keys(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return keys


def order_value(value: Any) -> tuple[int, float, str] | None:
    """How a value sorts: numbers by value before text alphabetically; None when missing
    (missing values go last in either direction)."""
    if value is None or value == []:
        return None
    number = as_number(value)
    if number is not None:
        return None if number != number else (0, number, "")  # NaN sorts with the missing
    return (1, 0.0, str(value).lower())
