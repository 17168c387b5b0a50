import math

from app.rules.nonfinite import NonFinite
from tests.rules.helpers import findings, noisy_decay, series


def test_fires_once_on_a_nan_loss_and_names_the_step() -> None:
    loss = list(noisy_decay(200))
    loss[120:] = [math.nan] * 80  # once NaN reaches the weights, it stays
    episodes = findings(NonFinite, {"train/loss": series(loss)})
    assert len(episodes) == 1
    (episode,) = episodes
    assert (episode.first_step, episode.last_step) == (120, 199)
    assert episode.severity == "critical" and episode.state == "firing"
    assert episode.evidence["key"] == "train/loss" and episode.evidence["value"] == "nan"


def test_an_infinite_grad_norm_fires_and_a_recovery_resolves() -> None:
    grad = [1.0] * 100
    grad[50] = math.inf
    episodes = findings(
        NonFinite, {"train/loss": series(noisy_decay(100)), "train/grad_norm": series(grad)}
    )
    (episode,) = episodes
    assert episode.first_step == 50 and episode.evidence["key"] == "train/grad_norm"
    assert episode.state == "resolved" and episode.evidence["resolved_step"] == 53


def test_finite_series_stay_silent() -> None:
    data = {"train/loss": series(noisy_decay(300)), "train/grad_norm": series([0.5] * 300)}
    assert findings(NonFinite, data) == []
