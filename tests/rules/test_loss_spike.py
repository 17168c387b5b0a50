import math

import numpy as np

from app.rules.loss_spike import LossSpike
from tests.rules.helpers import findings, noisy_decay, series


def _spiky(n: int = 400) -> np.ndarray:
    loss = noisy_decay(n)
    loss[250:254] = [5.0, 4.0, 3.0, 2.6]  # a bad batch at 250, three steps to come back
    return loss


def test_a_jump_far_above_the_window_fires_and_recovers() -> None:
    (episode,) = findings(LossSpike, {"train/loss": series(_spiky())})
    assert episode.code == "loss_spike" and episode.severity == "warning"
    assert episode.first_step == 250 and episode.state == "resolved"
    assert episode.evidence["value"] == 5.0 and episode.evidence["zscore"] > 6
    assert episode.evidence["zscore_threshold"] == 6.0
    assert episode.evidence["median"] < 2.1 and episode.evidence["ratio"] > 2.4
    # resolved when back near the pre-spike level, not on the first step below the peak
    assert episode.last_step == 253 and episode.evidence["steps_to_resolve"] == 4
    assert "jumped to 5 at step 250" in episode.detail


def test_every_1_and_every_large_give_the_same_episodes() -> None:
    data = {"train/loss": series(_spiky())}
    one = findings(LossSpike, data, every=1)
    many = findings(LossSpike, data, every=97)
    assert [e.to_state() for e in one] == [e.to_state() for e in many]


def test_a_jump_in_the_first_steps_fires_through_the_ratio() -> None:
    loss = list(noisy_decay(200))
    loss[5] = 1.5 * loss[4]
    (episode,) = findings(LossSpike, {"train/loss": series(loss)})
    assert episode.first_step == 5 and episode.evidence["window_points"] == 5


def test_a_healthy_curve_and_a_tiny_jump_on_a_smooth_one_stay_silent() -> None:
    assert findings(LossSpike, {"train/loss": series(noisy_decay(600, noise=0.05))}) == []
    smooth = noisy_decay(300, noise=1e-5)
    smooth[200] *= 1.02  # 2000 sigmas of a very smooth curve, but 2% of the level
    assert findings(LossSpike, {"train/loss": series(smooth)}) == []


def test_non_finite_values_are_skipped() -> None:
    loss = noisy_decay(300)
    loss[200] = math.nan
    assert findings(LossSpike, {"train/loss": series(loss)}) == []


def test_it_links_to_a_grad_norm_spike_a_few_steps_before() -> None:
    assert LossSpike.links_to == ("grad_norm_spike", 5)
