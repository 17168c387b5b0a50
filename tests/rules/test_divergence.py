import numpy as np

from app.rules.divergence import Divergence
from tests.rules.helpers import findings, noisy_decay, series


def test_a_loss_that_doubles_and_stays_up_is_critical_and_resolves_when_back() -> None:
    loss = noisy_decay(300)
    loss[200:230] = 6.0  # ~3x the recent mean for 30 steps
    (episode,) = findings(Divergence, {"train/loss": series(loss)})
    assert episode.code == "divergence" and episode.severity == "critical"
    assert episode.first_step == 204  # the fifth consecutive step
    assert episode.evidence["condition"] == "above_recent_mean"
    assert 1.9 < episode.evidence["recent_mean"] < 2.2 and episode.evidence["ratio_threshold"] == 2
    assert episode.state == "resolved" and episode.evidence["resolved_step"] == 230


def test_a_loss_that_shoots_up_from_step_0_fires() -> None:
    loss = np.concatenate([[4.4], np.full(20, 12.0), noisy_decay(100, start=4.0)])
    (episode,) = findings(Divergence, {"train/loss": series(loss)})
    assert episode.first_step == 5 and episode.evidence["recent_mean"] == 4.4


def test_back_above_the_first_loss_after_falling_fires() -> None:
    loss = np.concatenate([noisy_decay(100, start=4.0, end=3.0), np.linspace(3.2, 4.6, 50)])
    (episode,) = findings(Divergence, {"train/loss": series(loss)})
    assert episode.evidence["condition"] == "back_above_initial"
    assert loss[episode.first_step - 4 : episode.first_step + 1].min() >= loss[0]
    assert episode.evidence["fallen_step"] < 100 and episode.state == "firing"


def test_a_one_step_spike_and_a_healthy_curve_stay_silent() -> None:
    loss = noisy_decay(300)
    loss[150] = 10.0
    assert findings(Divergence, {"train/loss": series(loss)}) == []


def test_every_1_and_every_large_give_the_same_episodes() -> None:
    loss = noisy_decay(300)
    loss[100:140] = 6.0
    loss[200:] = 5.0
    data = {"train/loss": series(loss)}
    one = findings(Divergence, data, every=1)
    assert len(one) == 2
    assert [e.to_state() for e in one] == [
        e.to_state() for e in findings(Divergence, data, every=64)
    ]
