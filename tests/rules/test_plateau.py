import numpy as np

from app.rules.plateau import Plateau
from tests.rules.helpers import findings, noisy_decay, series


def _flat(n: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 4.45 * (1 + 0.01 * rng.standard_normal(n))


def test_a_flat_loss_with_a_tiny_lr_fires_and_names_the_lr() -> None:
    data = {
        "train/loss": series(_flat()),
        "train/grad_norm": series(np.full(300, 0.8)),
        "train/lr": series(np.full(300, 2e-6)),
    }
    (episode,) = findings(Plateau, data, {"max_steps": 300})
    assert episode.code == "plateau" and episode.severity == "warning"
    assert episode.first_step == 75 and episode.state == "firing"  # 25% of max_steps
    assert episode.evidence["drop"] < 0.05 and episode.evidence["min_drop"] == 0.05
    assert episode.evidence["cause"].startswith("learning rate too low")
    assert episode.evidence["lr"] == 2e-6 and episode.evidence["grad_norm_median"] == 0.8
    assert "learning rate too low" in episode.detail


def test_tiny_grad_norms_mean_gradients_are_not_flowing() -> None:
    data = {"train/loss": series(_flat()), "train/grad_norm": series(np.full(300, 1e-7))}
    (episode,) = findings(Plateau, data, {"lr": 1e-3, "max_steps": 300})
    assert episode.first_step == 75 and episode.evidence["lr"] == 1e-3  # from the config
    assert episode.evidence["cause"].startswith("gradients not flowing")


def test_without_max_steps_the_stretch_is_500_steps() -> None:
    data = {"train/loss": series(_flat(700))}
    (episode,) = findings(Plateau, data)
    assert episode.first_step == 500 and episode.evidence["cause"].startswith("unclear")


def test_it_resolves_when_the_loss_starts_falling() -> None:
    loss = np.concatenate([_flat(200), noisy_decay(200, start=4.4, end=2.0)])
    (episode,) = findings(Plateau, {"train/loss": series(loss)}, {"max_steps": 400}, every=1)
    assert episode.first_step == 100 and episode.state == "resolved"
    assert episode.evidence["escaped_level"] < 0.9 * episode.evidence["start_level"]
    assert (
        episode.to_state()
        == findings(Plateau, {"train/loss": series(loss)}, {"max_steps": 400}, every=150)[
            0
        ].to_state()
    )


def test_a_falling_loss_stays_silent() -> None:
    assert findings(Plateau, {"train/loss": series(noisy_decay(600))}, {"max_steps": 600}) == []
