import numpy as np

from app.rules.resume_discontinuity import ResumeDiscontinuity
from tests.rules.helpers import findings, noisy_decay, series

N = 300
RESUME = 150


def _run(jump: float) -> dict:
    """A loss curve that, from the resume on, sits `jump` above itself, decaying over
    ~10 steps (Adam re-learning its moments)."""
    loss = noisy_decay(N)
    after = np.arange(N - RESUME)
    loss[RESUME:] *= 1 + jump * np.exp(-after / 10)
    return {"train/loss": series(loss), "train/resumed": series([1.0], start=RESUME)}


def test_a_jump_after_the_resume_fires_at_the_resume_step_and_resolves() -> None:
    (episode,) = findings(ResumeDiscontinuity, _run(jump=0.5))
    assert episode.code == "resume_discontinuity" and episode.severity == "warning"
    assert episode.first_step == RESUME
    assert episode.evidence["resume_step"] == RESUME
    assert episode.evidence["keys"] == ["train/loss"]
    assert episode.evidence["train/loss"]["relative_jump"] > 0.3
    assert episode.state == "resolved" and RESUME + 5 < episode.evidence["resolved_step"] < 180


def test_a_seamless_resume_stays_silent() -> None:
    data = _run(jump=0.0)
    data["train/grad_norm"] = series(0.5 + 0.05 * np.random.default_rng(1).standard_normal(N))
    assert findings(ResumeDiscontinuity, data) == []


def test_a_tripled_gradient_norm_fires_even_when_the_loss_barely_moves() -> None:
    # Fresh Adam moments: the first updates knock the model off its valley; with a noisy
    # loss the gradient norm shows it first.
    data = _run(jump=0.05)
    norm = 0.5 + 0.05 * np.random.default_rng(1).standard_normal(N)
    norm[RESUME + 1 : RESUME + 6] = 1.5
    data["train/grad_norm"] = series(norm)
    (episode,) = findings(ResumeDiscontinuity, data)
    assert episode.first_step == RESUME and episode.evidence["keys"] == ["train/grad_norm"]
    assert episode.evidence["train/grad_norm"]["relative_jump"] > 1.0
    # Resolved once the trailing 5-step mean is back under the threshold (6 sigma).
    assert episode.state == "resolved" and episode.evidence["resolved_step"] == RESUME + 9


def test_a_jump_without_a_resume_marker_is_not_this_rule() -> None:
    data = _run(jump=0.5)
    del data["train/resumed"]
    assert findings(ResumeDiscontinuity, data) == []


def test_incremental_evaluation_gives_the_same_episodes() -> None:
    data = _run(jump=0.5)
    assert findings(ResumeDiscontinuity, data, every=1) == findings(
        ResumeDiscontinuity, data, every=1000
    )
