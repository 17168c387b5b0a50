from app.rules.early_stop import EarlyStop
from app.rules.overfit import Overfit
from tests.rules.helpers import findings, noisy_decay, series

CONFIG = {"actions": {"early_stop": {"patience": 3, "min_delta": 0.0}}}


def test_the_trainers_stop_marker_becomes_one_info_finding() -> None:
    data = {
        "train/loss": series(noisy_decay(176)),
        "train/early_stopped": series([1.92], start=175),
    }
    (episode,) = findings(EarlyStop, data, CONFIG)
    assert episode.severity == "info" and episode.first_step == 175
    assert episode.evidence["best_val_loss"] == 1.92 and episode.evidence["patience"] == 3
    assert "ckpt_best" in episode.detail and "3 evaluations" in episode.detail


def test_a_run_without_the_marker_stays_silent() -> None:
    assert findings(EarlyStop, {"train/loss": series(noisy_decay(300))}, CONFIG) == []


def test_the_overfit_fix_points_to_the_action() -> None:
    assert "actions.early_stop" in Overfit.fix
