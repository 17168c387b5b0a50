import numpy as np

from app.rules.overfit import Overfit
from tests.rules.helpers import findings, noisy_decay, series

# Evaluations every 25 steps: val bottoms out at step 100, then climbs.
VAL = [3.0, 2.8, 2.6, 2.5, 2.45, 2.5, 2.56, 2.62, 2.7, 2.78]
TRAIN_EVAL = list(np.linspace(3.0, 1.5, len(VAL)))


def _run(val: list[float], train_eval: list[float] | None = None) -> dict:
    data = {"val/loss": series(val, every=25), "train/loss": series(noisy_decay(25 * len(val)))}
    if train_eval is not None:
        data["train/loss_eval"] = series(train_eval, every=25)
    return data


def test_fires_after_three_rising_evaluations_and_names_the_best_step() -> None:
    (episode,) = findings(Overfit, _run(VAL, TRAIN_EVAL))
    assert episode.code == "overfit" and episode.severity == "warning"
    assert episode.first_step == 175  # the third rise in a row (steps 125, 150, 175)
    assert episode.evidence["best_step"] == 100
    assert episode.evidence["best_val_loss"] == 2.45
    assert episode.state == "firing" and episode.last_step == 225


def test_a_noisy_rise_counts_without_three_strict_rises_in_a_row() -> None:
    val = [3.0, 2.8, 2.6, 2.5, 2.45, 2.55, 2.52, 2.62, 2.7]
    (episode,) = findings(Overfit, _run(val, TRAIN_EVAL[: len(val)]))
    assert episode.first_step == 175 and episode.evidence["rising_since_step"] == 100


def test_falls_back_to_the_smoothed_train_loss() -> None:
    (episode,) = findings(Overfit, _run(VAL))
    assert episode.first_step == 175 and episode.evidence["train_loss"] < 2.0


def test_a_new_best_val_loss_resolves_it() -> None:
    val = [*VAL, 2.4, 2.35]
    (episode,) = findings(Overfit, _run(val, list(np.linspace(3.0, 1.5, len(val)))))
    assert episode.state == "resolved" and episode.evidence["resolved_step"] == 250


def test_val_tracking_train_or_rising_with_it_stays_silent() -> None:
    falling = list(np.linspace(3.0, 2.0, 10))
    assert findings(Overfit, _run(falling, [v - 0.05 for v in falling])) == []
    # Both rising is divergence, not overfitting.
    assert findings(Overfit, _run(VAL, [v - 0.1 for v in VAL])) == []


def test_incremental_evaluation_gives_the_same_episodes() -> None:
    data = _run(VAL, TRAIN_EVAL)
    assert findings(Overfit, data, every=1) == findings(Overfit, data, every=1000)
