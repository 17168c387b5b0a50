"""A rule's thresholds for one run: the rule's defaults, then the service settings
(`TRAINLENS_RULES__LOSS_SPIKE__ZSCORE=8`), then the run's own `config.rules`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from app.rules.base import Rule, Thresholds

log = logging.getLogger(__name__)


def limits_for(
    rule: type[Rule], defaults: BaseModel | None, run_config: Mapping[str, Any]
) -> Thresholds:
    """Thresholds for `rule` on a run. Overrides that do not validate (an external run's
    config is the user's) are logged and ignored rather than guessed at."""
    base = getattr(defaults, rule.code, None) if defaults is not None else None
    if not isinstance(base, rule.thresholds):
        base = rule.thresholds()
    overrides = run_overrides(run_config).get(rule.code)
    if not overrides:
        return base
    try:
        return rule.thresholds.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        log.warning("ignoring invalid config.rules.%s: %s", rule.code, exc)
        return base


def run_overrides(run_config: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    rules = run_config.get("rules")
    if not isinstance(rules, Mapping):
        return {}
    return {code: value for code, value in rules.items() if isinstance(value, Mapping)}


def override_errors(rules: Mapping[str, type[Rule]], overrides: Any) -> list[tuple[str, str]]:
    """(field path, reason) for each problem in a run's `config.rules`, for a 422."""
    if overrides is None:
        return []
    if not isinstance(overrides, Mapping):
        return [("config.rules", "must be an object of rule code -> thresholds")]
    errors: list[tuple[str, str]] = []
    for code, values in overrides.items():
        rule = rules.get(code)
        if rule is None:
            errors.append((f"config.rules.{code}", f"unknown rule; known: {', '.join(rules)}"))
            continue
        if not isinstance(values, Mapping):
            errors.append((f"config.rules.{code}", "must be an object of thresholds"))
            continue
        try:
            rule.thresholds.model_validate(values)
        except ValidationError as exc:
            for error in exc.errors():
                path = ".".join(str(part) for part in error["loc"])
                errors.append((f"config.rules.{code}.{path}", error["msg"]))
    return errors
