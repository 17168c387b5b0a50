import numpy as np

from app.rules.lr_schedule import LrSchedule
from tests.rules.helpers import findings, noisy_decay, series

N = 200
PEAK = 1e-3


def _warmup_lr(warmup: int, n: int = N) -> list[float]:
    return [PEAK * min(1.0, (step + 1) / warmup) for step in range(n)]


def _cosine_lr(n: int = N, min_lr: float = 1e-4) -> list[float]:
    return list(min_lr + 0.5 * (PEAK - min_lr) * (1 + np.cos(np.pi * np.arange(n) / n)))


def _run(lr: list[float], loss: list[float] | None = None) -> dict:
    loss = loss if loss is not None else list(noisy_decay(len(lr)))
    return {"train/lr": series(lr), "train/loss": series(loss)}


def _config(**fields: object) -> dict:
    return {"lr": PEAK, "min_lr": 1e-4, "max_steps": N, "schedule": "constant", **fields}


def test_configured_warmup_that_is_not_applied_fires_at_the_first_step() -> None:
    (episode,) = findings(LrSchedule, _run([PEAK] * N), _config(warmup_steps=20))
    assert (episode.code, episode.subject, episode.severity) == ("lr_schedule", "warmup", "warning")
    assert episode.first_step == 0
    assert episode.evidence["first_lr"] == PEAK and episode.evidence["warmup_steps"] == 20


def test_an_applied_warmup_stays_silent() -> None:
    assert findings(LrSchedule, _run(_warmup_lr(20)), _config(warmup_steps=20)) == []


def test_no_warmup_fires_when_the_loss_climbs_back_above_its_start() -> None:
    loss = [4.4, 4.0, 3.7, 4.2, 4.7, 4.9, 4.5, *noisy_decay(N - 7, start=4.2)]
    (episode,) = findings(LrSchedule, _run([PEAK] * N, loss), _config(warmup_steps=0))
    assert episode.subject == "warmup" and episode.first_step == 4
    assert episode.evidence["lowest_loss"] == 3.7 and episode.evidence["loss"] == 4.7


def test_no_warmup_with_a_smooth_descent_or_an_immediate_blow_up_stays_silent() -> None:
    config = _config(warmup_steps=0)
    assert findings(LrSchedule, _run([PEAK] * N), config) == []
    # Up from the first step: the LR is too high outright, which warmup would not fix.
    blow_up = [4.4, 8.0, 7.5, *noisy_decay(N - 3, start=4.0)]
    assert findings(LrSchedule, _run([PEAK] * N, blow_up), config) == []


def test_param_groups_at_different_rates_fire_unless_configured() -> None:
    data = _run([PEAK] * N)
    data["train/lr/group0"] = series([PEAK] * N)
    data["train/lr/group1"] = series([PEAK] * 100 + [PEAK / 10] * 100)
    (episode,) = findings(LrSchedule, data, _config(warmup_steps=0))
    assert episode.subject == "groups" and episode.first_step == 100
    assert episode.evidence["max_lr"] / episode.evidence["min_lr"] == 10
    assert findings(LrSchedule, data, _config(warmup_steps=0, layer_lr_decay=0.8)) == []


def test_a_cosine_still_at_its_peak_fires_where_it_should_have_decayed() -> None:
    (episode,) = findings(LrSchedule, _run([PEAK] * N), _config(schedule="cosine", warmup_steps=0))
    # The configured cosine (1e-3 to 1e-4 over 200 steps) is down to 80% at step 63.
    assert episode.subject == "decay" and episode.first_step == 63
    assert episode.evidence["lr"] == PEAK


def test_a_shallow_cosine_is_judged_in_the_last_tenth_of_the_run() -> None:
    config = _config(schedule="cosine", warmup_steps=0, min_lr=0.9 * PEAK)
    (episode,) = findings(LrSchedule, _run([PEAK] * N), config)
    assert episode.first_step == 180


def test_a_decaying_cosine_or_a_config_without_the_fields_stays_silent() -> None:
    assert findings(LrSchedule, _run(_cosine_lr()), _config(schedule="cosine")) == []
    assert findings(LrSchedule, _run([PEAK] * N), {"schedule": "cosine"}) == []


def test_incremental_evaluation_gives_the_same_episodes() -> None:
    config = _config(schedule="cosine", warmup_steps=20)
    data = _run([PEAK] * N)
    assert findings(LrSchedule, data, config, every=1) == findings(
        LrSchedule, data, config, every=1000
    )
    assert len(findings(LrSchedule, data, config, every=1)) == 2
