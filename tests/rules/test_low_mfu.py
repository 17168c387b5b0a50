import numpy as np

from app.rules.low_mfu import LowMfu
from tests.rules.helpers import findings, series

N = 300


def _mfu(level: float, low_from: int = 0, low_to: int = 0) -> dict:
    rng = np.random.default_rng(0)
    mfu = level * (1 + 0.1 * rng.standard_normal(N))
    mfu[low_from:low_to] = 0.02
    return {"perf/mfu": series(mfu)}


def test_fires_when_the_median_mfu_after_warmup_is_low() -> None:
    (episode,) = findings(LowMfu, _mfu(0.05), {"warmup_steps": 10, "device": "cuda"})
    assert episode.code == "low_mfu" and episode.severity == "info"
    assert episode.first_step == 59  # the first full 50-step window after warmup
    assert episode.evidence["mfu_median"] < 0.15 and episode.evidence["threshold"] == 0.15
    assert episode.evidence["device"] == "cuda" and "on cuda" in episode.detail


def test_without_warmup_in_the_config_the_first_steps_are_skipped() -> None:
    (episode,) = findings(LowMfu, _mfu(0.05), {})
    assert episode.first_step == 99  # 50 skipped, then a full window


def test_high_mfu_and_a_dip_shorter_than_half_the_window_stay_silent() -> None:
    assert findings(LowMfu, _mfu(0.4, 100, 120), {"warmup_steps": 10}) == []


def test_a_sustained_drop_fires_then_resolves() -> None:
    (episode,) = findings(LowMfu, _mfu(0.4, 100, 180), {"warmup_steps": 10})
    assert episode.first_step == 125  # the median crosses once 26 of the 50 are low
    # Clear from step 204 (25 of 50 low), resolved after 5 clear steps.
    assert episode.state == "resolved" and episode.evidence["resolved_step"] == 208


def test_no_mfu_no_finding() -> None:
    assert findings(LowMfu, {"perf/tokens_per_sec": series([1e5] * N)}, {}) == []


def test_incremental_evaluation_gives_the_same_episodes() -> None:
    data = _mfu(0.4, 100, 180)
    assert findings(LowMfu, data, every=1) == findings(LowMfu, data, every=1000)
