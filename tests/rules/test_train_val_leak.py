import numpy as np

from app.rules.train_val_leak import TrainValLeak
from tests.rules.helpers import findings, series

TRAIN = list(np.linspace(3.0, 2.0, 8))  # evaluations every 25 steps


def _run(val: list[float], train: list[float], key: str = "train/loss_eval") -> dict:
    return {"val/loss": series(val, every=25), key: series(train, every=25)}


def test_fires_when_val_equals_train_for_three_falling_evaluations() -> None:
    (episode,) = findings(TrainValLeak, _run([t * 1.0005 for t in TRAIN], TRAIN))
    assert episode.code == "train_val_leak" and episode.severity == "info"
    assert episode.first_step == 50  # the third equal evaluation
    assert episode.evidence["since_step"] == 0
    assert episode.evidence["relative_gap"] < 0.001


def test_falls_back_to_train_loss_at_the_eval_steps() -> None:
    (episode,) = findings(TrainValLeak, _run(TRAIN, TRAIN, key="train/loss"))
    assert episode.first_step == 50


def test_a_normal_generalisation_gap_stays_silent() -> None:
    assert findings(TrainValLeak, _run([t * 1.05 for t in TRAIN], TRAIN)) == []


def test_equal_losses_that_do_not_fall_stay_silent() -> None:
    # At init any model scores the same on train and val text.
    assert findings(TrainValLeak, _run([4.5] * 8, [4.5] * 8)) == []


def test_a_gap_that_opens_resolves_it() -> None:
    val = [t * 1.0005 for t in TRAIN[:5]] + [t * 1.05 for t in TRAIN[5:]]
    (episode,) = findings(TrainValLeak, _run(val, TRAIN))
    assert episode.state == "resolved" and episode.evidence["resolved_step"] == 125


def test_a_held_out_gap_of_a_few_percent_is_not_a_leak() -> None:
    assert findings(TrainValLeak, _run([t * 1.03 for t in TRAIN], TRAIN)) == []
