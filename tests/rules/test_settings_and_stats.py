"""Thresholds from settings and per-run config; window statistics that exclude the point."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.config import Settings
from app.rules.limits import limits_for, override_errors
from app.rules.loss_spike import LossSpike
from app.rules.registry import RULES, RULES_BY_CODE
from app.rules.stats import robust_z, trailing_baseline


def test_defaults_then_settings_then_the_run_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert limits_for(LossSpike, Settings().rules, {}).zscore == 6.0  # type: ignore[attr-defined]
    monkeypatch.setenv("TRAINLENS_RULES__LOSS_SPIKE__ZSCORE", "8")
    settings = Settings()
    assert limits_for(LossSpike, settings.rules, {}).zscore == 8.0  # type: ignore[attr-defined]
    run_config = {"rules": {"loss_spike": {"window": 32}}}
    limits = limits_for(LossSpike, settings.rules, run_config)
    assert (limits.zscore, limits.window) == (8.0, 32)  # type: ignore[attr-defined]
    ignored = limits_for(LossSpike, settings.rules, {"rules": {"loss_spike": {"window": -1}}})
    assert ignored.window == 128  # type: ignore[attr-defined]


def test_override_errors_name_the_field() -> None:
    errors = override_errors(RULES_BY_CODE, {"loss_spike": {"zscore": -1}, "nope": {}})
    fields = [field for field, _ in errors]
    assert fields == ["config.rules.loss_spike.zscore", "config.rules.nope"]
    assert override_errors(RULES_BY_CODE, {"stalled": {"timeout_seconds": 60}}) == []


def test_every_registered_rule_is_documented() -> None:
    codes = [rule.code for rule in RULES]
    assert len(codes) == len(set(codes)) == 21  # 18 + early_stop, stability, mfu_measurement
    for rule in RULES:
        assert rule.title and rule.fix and len(rule.explanation()) > 60, rule.code
        assert rule.severity in ("info", "warning", "critical")


def test_the_window_excludes_the_point_it_judges() -> None:
    # With the point inside its own window, z can never exceed sqrt(n - 1) = 3 for n = 10.
    values = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.1, 0.9, 50.0])
    baseline = trailing_baseline(values, start=9, window=9)
    assert baseline.count[0] == 9 and baseline.median[0] == pytest.approx(1.0)
    z = robust_z(values[9:], baseline, sigma_floor=1e-9)[0]
    assert z > 100 > math.sqrt(len(values) - 1)


def test_non_finite_values_are_left_out_of_the_window() -> None:
    values = np.array([1.0, math.nan, 1.0, math.inf, 1.0, 2.0])
    baseline = trailing_baseline(values, start=5, window=5)
    assert baseline.count[0] == 3 and baseline.median[0] == 1.0
