import math

from app.rules.init_loss import InitLoss
from tests.rules.helpers import findings, noisy_decay, series

VOCAB = 96  # ln(96) = 4.564


def _run(first_loss: float, config: dict[str, object] | None = None) -> list:
    loss = noisy_decay(100)
    loss[0] = first_loss
    data = {"train/loss": series(loss), "data/vocab_size": series([float(VOCAB)])}
    return findings(InitLoss, data, config)


def test_a_first_loss_far_above_ln_vocab_is_critical_and_stays_firing() -> None:
    (episode,) = _run(12.0)
    assert episode.code == "init_loss" and episode.severity == "critical"
    assert episode.state == "firing" and episode.first_step == 0
    assert episode.evidence["first_loss"] == 12.0 and episode.evidence["vocab_size"] == VOCAB
    assert episode.evidence["ratio"] == round(12.0 / math.log(VOCAB), 3)
    assert "ln(vocab_size)" in episode.detail


def test_a_first_loss_somewhat_above_is_a_warning() -> None:
    (episode,) = _run(1.3 * math.log(VOCAB))
    assert episode.severity == "warning"


def test_a_first_loss_far_below_is_info() -> None:
    (episode,) = _run(1.0)
    assert episode.severity == "info"


def test_a_first_loss_near_ln_vocab_is_silent() -> None:
    assert _run(4.4) == []


def test_the_config_vocab_size_wins_and_no_vocab_size_is_silent() -> None:
    (episode,) = findings(InitLoss, {"train/loss": series([14.0, 9.0])}, {"vocab_size": 50257})
    assert episode.severity == "warning" and episode.evidence["vocab_size"] == 50257
    assert findings(InitLoss, {"train/loss": series([30.0, 6.0])}) == []


def test_a_series_that_starts_late_is_not_an_init_loss() -> None:
    data = {"train/loss": series([30.0, 6.0], start=5000)}
    assert findings(InitLoss, data, {"vocab_size": 96}) == []
