"""An MFU above 100% is a measurement warning, never judged as MFU."""

from __future__ import annotations

import numpy as np

from app.rules.low_mfu import LowMfu
from app.rules.mfu_measurement import MfuMeasurement
from tests.rules.helpers import findings, series

CONFIG = {"warmup_steps": 10, "device": "cpu"}


def test_an_mfu_of_306_percent_is_a_measurement_warning_and_not_low_mfu() -> None:
    rng = np.random.default_rng(0)
    data = {
        "perf/mfu": series(3.06 * (1 + 0.2 * rng.standard_normal(200))),
        "perf/peak_estimated": series([1.0]),
    }
    (episode,) = findings(MfuMeasurement, data, CONFIG)
    assert episode.code == "mfu_measurement" and episode.severity == "info"
    assert episode.first_step == 0 and episode.evidence["peak_estimated"] is True
    assert "estimated (probed) CPU peak" in episode.detail
    assert findings(LowMfu, data, CONFIG) == []


def test_the_trainers_unreliable_key_fires_and_plausible_values_stay_silent() -> None:
    (episode,) = findings(MfuMeasurement, {"perf/mfu_unreliable": series([11.75] * 5)})
    assert episode.evidence["key"] == "perf/mfu_unreliable"
    assert findings(MfuMeasurement, {"perf/mfu": series([0.4] * 100)}) == []


def test_low_mfu_judges_only_the_plausible_values() -> None:
    values = np.full(200, 0.05)
    values[100:105] = 5.0  # a few impossible points inside a low stretch
    (episode,) = findings(LowMfu, {"perf/mfu": series(values)}, CONFIG)
    assert episode.evidence["mfu_median"] < 0.15
