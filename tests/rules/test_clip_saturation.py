import numpy as np

from app.rules.clip_saturation import ClipSaturation
from tests.rules.helpers import findings, noisy_decay, series

N = 300
CONFIG = {"warmup_steps": 10, "lr": 1e-3, "grad_clip": 1.0}


def _run(clipped: list[float], lr: list[float] | None = None, loss: list[float] | None = None):
    return {
        "train/grad_clipped": series(clipped),
        "train/lr": series(lr if lr is not None else [1e-3] * len(clipped)),
        "train/loss": series(loss if loss is not None else noisy_decay(len(clipped))),
    }


def _pattern(share: float, n: int = N) -> list[float]:
    """Clipped on the first share * 10 of every 10 steps."""
    return [float(i % 10 < share * 10) for i in range(n)]


def test_fires_when_most_steps_after_warmup_are_clipped() -> None:
    (episode,) = findings(ClipSaturation, _run(_pattern(0.7)), CONFIG)
    assert episode.code == "clip_saturation" and episode.severity == "info"
    assert episode.first_step == 109  # the first full 100-step window after warmup
    assert episode.evidence["clip_fraction"] == 0.7 and episode.evidence["threshold"] == 0.5
    assert episode.evidence["cause"] == "clip_threshold_low"


def test_a_healthy_run_clipping_most_steps_is_an_info_about_the_threshold() -> None:
    """nanoGPT's char-level recipe: clip 1.0, pre-clip norm ~1.3, 93% of steps clipped,
    the loss falling normally. The advice is about the threshold, not the LR."""
    rng = np.random.default_rng(0)
    norm = 1.3 * rng.lognormal(0.0, 0.15, N)
    data = {
        "train/grad_norm": series(norm),
        "train/lr": series([1e-3] * N),
        "train/loss": series(noisy_decay(N)),
    }
    (episode,) = findings(ClipSaturation, data, CONFIG)
    assert episode.severity == "info" and episode.evidence["cause"] == "clip_threshold_low"
    assert 1.2 < episode.evidence["typical_grad_norm"] < 1.4
    assert "below the typical gradient norm" in episode.detail
    assert episode.fix is not None and "Raise grad_clip to about 1.3" in episode.fix
    assert "learning rate" not in episode.fix.lower()


def test_clipping_while_the_loss_rises_is_a_warning_that_the_lr_is_too_high() -> None:
    loss = np.concatenate([noisy_decay(150), np.linspace(2.6, 4.0, N - 150)])
    (episode,) = findings(ClipSaturation, _run([1.0] * N, loss=list(loss)), CONFIG)
    assert episode.severity == "warning" and episode.evidence["cause"] == "lr_too_high"
    assert episode.evidence["loss_change"] > 0.02
    assert "learning rate looks too high" in episode.detail
    assert episode.fix is not None and "Lower the learning rate" in episode.fix


def test_resolves_when_the_fraction_falls_back() -> None:
    clipped = _pattern(0.7, 200) + [0.0] * 200
    (episode,) = findings(ClipSaturation, _run(clipped), CONFIG)
    assert episode.state == "resolved"
    assert episode.evidence["resolved_step"] == 234  # ten clear steps from 50% at 225


def test_derives_clipping_from_grad_norm_and_grad_clip() -> None:
    data = _run(_pattern(0.7))
    norm = [1.5 if clipped else 0.5 for clipped in data.pop("train/grad_clipped").values]
    data["train/grad_norm"] = series(norm)
    (episode,) = findings(ClipSaturation, data, CONFIG)
    assert episode.first_step == 109
    assert findings(ClipSaturation, data, {"warmup_steps": 10}) == []  # no grad_clip: silent


def test_occasional_clipping_stays_silent() -> None:
    assert findings(ClipSaturation, _run(_pattern(0.3)), CONFIG) == []


def test_clipping_late_in_a_decayed_schedule_stays_silent() -> None:
    # A healthy run's gradient norm grows as a cosine LR decays: late steps all clip.
    lr = list(1e-3 * 0.5 * (1 + np.cos(np.pi * np.arange(N) / N)))
    clipped = [0.0] * 200 + [1.0] * 100
    assert findings(ClipSaturation, _run(clipped, lr=lr), CONFIG) == []


def test_clipping_at_the_initial_loss_stays_silent() -> None:
    # An LR far too low: the loss never leaves its start, gradients stay at init scale.
    flat = list(4.4 + 0.01 * np.random.default_rng(0).standard_normal(N))
    assert findings(ClipSaturation, _run([1.0] * N, loss=flat), CONFIG) == []


def test_incremental_evaluation_gives_the_same_episodes() -> None:
    data = _run(_pattern(0.7, 200) + [0.0] * 200)
    assert findings(ClipSaturation, data, CONFIG, every=1) == findings(
        ClipSaturation, data, CONFIG, every=500
    )
