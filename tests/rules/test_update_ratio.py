import numpy as np

from app.rules.update_ratio import UpdateRatio
from tests.rules.helpers import findings, series

EVERY = 10  # instrument_interval


def ratios(layer: str, values: list[float] | np.ndarray) -> dict:
    return {f"update/{layer}/ratio": series(values, every=EVERY)}


def test_updates_too_small_are_info_then_warning_when_they_last() -> None:
    data = ratios("h0", [2e-5] * 40) | ratios("h1", [1e-3] * 40)
    (episode,) = findings(UpdateRatio, data)
    assert episode.code == "update_ratio" and episode.subject == "h0"
    # 3 transient points skipped, then a full 5-point window: judged from step 70.
    assert episode.first_step == 70 and episode.last_step == 390
    assert episode.severity == "warning"  # below the band for 20 points in a row
    assert episode.fix is not None and episode.fix.startswith("Raise the learning rate")
    assert episode.evidence["points_outside"] == 20 and episode.evidence["step"] == 260
    short = findings(UpdateRatio, ratios("h0", [2e-5] * 20))
    assert short[0].severity == "info" and short[0].evidence["median_ratio"] == 2e-5


def test_updates_far_too_large_warn_at_once() -> None:
    values = [9.0] + [0.2, 0.15, 0.25] * 10  # the first Adam step is not judged
    (episode,) = findings(UpdateRatio, ratios("wpe", values))
    assert episode.subject == "wpe" and episode.first_step == 70
    assert episode.severity == "warning" and episode.evidence["median_ratio"] == 0.2
    assert episode.evidence["high"] == 0.01 and episode.evidence["far_factor"] == 10.0
    assert episode.fix is not None and episode.fix.startswith("Lower the learning rate")


def test_a_decaying_learning_rate_lowers_the_floor() -> None:
    steps = np.arange(0, 600)
    lr = 2e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * steps / 600)))  # cosine to 10%
    data = {"train/lr": series(lr)} | ratios("h0", 2e-4 * lr[::EVERY] / 2e-3)
    assert findings(UpdateRatio, data, config={"lr": 2e-3}) == []
    assert findings(UpdateRatio, data | {"train/lr": series(np.full(600, 2e-3))}) != []


def test_warmup_and_layernorm_gains_are_not_judged_too_small() -> None:
    warmup = [1e-6] * 10 + [1e-3] * 30  # tiny while lr warms up over 100 steps
    assert findings(UpdateRatio, ratios("h0", warmup), config={"warmup_steps": 100}) == []
    assert findings(UpdateRatio, ratios("h0", warmup)) != []  # the same without warmup
    assert findings(UpdateRatio, ratios("ln_f", [3e-5] * 40)) == []


def test_incremental_evaluation_matches_one_pass() -> None:
    rng = np.random.default_rng(0)
    noisy = np.exp(rng.normal(np.log(3e-3), 1.5, 80))  # wanders in and out of the band
    data = ratios("h0", noisy) | ratios("wte", noisy[::-1]) | ratios("h1", [5e-5] * 80)
    one_by_one = findings(UpdateRatio, data, every=1)
    at_once = findings(UpdateRatio, data, every=10_000)
    assert [e.to_state() for e in one_by_one] == [e.to_state() for e in at_once]
    assert len(one_by_one) >= 3
