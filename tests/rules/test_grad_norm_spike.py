import numpy as np

from app.rules.grad_norm_spike import GradNormSpike
from tests.rules.helpers import findings, series


def _grad_norms(n: int = 300, seed: int = 1) -> np.ndarray:
    """Heavy-tailed and falling fast early, like a real pre-clip grad norm."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (0.7 + 5.0 * np.exp(-t / 15)) * rng.lognormal(0.0, 0.3, n)


def test_a_grad_norm_many_times_its_median_fires() -> None:
    grad = _grad_norms()
    grad[200] = 20.0
    (episode,) = findings(GradNormSpike, {"train/grad_norm": series(grad)})
    assert episode.code == "grad_norm_spike" and episode.severity == "warning"
    assert episode.first_step == 200 and episode.state == "resolved"
    assert episode.evidence["value"] == 20.0 and episode.evidence["ratio"] > 10
    assert episode.evidence["key"] == "train/grad_norm"
    assert episode.evidence["steps_to_resolve"] == 1


def test_heavy_tails_and_the_early_fall_stay_silent() -> None:
    for seed in range(5):
        data = {"train/grad_norm": series(_grad_norms(seed=seed))}
        assert findings(GradNormSpike, data) == []


def test_a_doubling_is_not_a_spike() -> None:
    grad = _grad_norms()
    grad[200] = 2.5 * np.median(grad[72:200])
    assert findings(GradNormSpike, {"train/grad_norm": series(grad)}) == []
