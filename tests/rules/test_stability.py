"""stability: config checks against the standard stability stack, at the first step."""

from __future__ import annotations

from app.rules.stability import Stability
from tests.rules.helpers import findings, noisy_decay, series

LOSS = {"train/loss": series(noisy_decay(50))}


def test_no_warmup_at_lr_1e_2_is_an_info_at_step_0_naming_the_risk() -> None:
    (episode,) = findings(Stability, LOSS, {"lr": 1e-2, "warmup_steps": 0})
    assert (episode.code, episode.subject, episode.severity) == ("stability", "warmup", "info")
    assert episode.first_step == 0 and episode.state == "firing"
    assert episode.evidence["summary"] == "no warmup at learning rate 0.01"
    assert "early loss spike" in episode.detail and episode.fix is not None


def test_each_missing_piece_is_its_own_subject() -> None:
    config = {"lr": 3e-3, "warmup_steps": 0, "grad_clip": 0, "weight_decay": 0.0, "beta2": 0.999}
    subjects = sorted(e.subject for e in findings(Stability, LOSS, config))
    assert subjects == ["beta2", "grad_clip", "warmup", "weight_decay"]


def test_a_complete_stack_an_unknown_config_and_a_low_lr_stay_silent() -> None:
    full = {"lr": 1e-2, "warmup_steps": 100, "grad_clip": 1.0, "weight_decay": 0.1, "beta2": 0.95}
    assert findings(Stability, LOSS, full) == []
    assert findings(Stability, LOSS, {}) == []  # an external script that says nothing
    assert findings(Stability, LOSS, {"lr": 1e-4, "warmup_steps": 0}) == []
