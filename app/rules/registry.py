"""The explicit list of rules the engine runs, in evaluation order, and their settings.

A rule is added by writing its module and listing its class here; nothing is discovered
by import side effects. Order matters in one place: `grad_norm_spike` runs before
`loss_spike`, so a loss spike can link to the grad-norm spike that warned of it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, create_model

from app.rules.activation_saturation import ActivationSaturation
from app.rules.activation_scale import ActivationScale
from app.rules.base import Rule
from app.rules.clip_saturation import ClipSaturation
from app.rules.dead_units import DeadUnits
from app.rules.divergence import Divergence
from app.rules.early_stop import EarlyStop
from app.rules.grad_norm_spike import GradNormSpike
from app.rules.init_loss import InitLoss
from app.rules.loss_spike import LossSpike
from app.rules.low_mfu import LowMfu
from app.rules.lr_schedule import LrSchedule
from app.rules.mfu_measurement import MfuMeasurement
from app.rules.nonfinite import NonFinite
from app.rules.overfit import Overfit
from app.rules.plateau import Plateau
from app.rules.resume_discontinuity import ResumeDiscontinuity
from app.rules.stability import Stability
from app.rules.stalled import Stalled
from app.rules.throughput_drop import ThroughputDrop
from app.rules.train_val_leak import TrainValLeak
from app.rules.update_ratio import UpdateRatio

RULES: tuple[type[Rule], ...] = (
    NonFinite,
    InitLoss,
    Stability,
    GradNormSpike,
    LossSpike,
    Divergence,
    ClipSaturation,
    Plateau,
    Overfit,
    EarlyStop,
    TrainValLeak,
    ActivationSaturation,
    DeadUnits,
    ActivationScale,
    UpdateRatio,
    LrSchedule,
    ResumeDiscontinuity,
    ThroughputDrop,
    LowMfu,
    MfuMeasurement,
    Stalled,
)

RULES_BY_CODE: dict[str, type[Rule]] = {rule.code: rule for rule in RULES}


def _rule_settings_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        rule.code: (rule.thresholds, Field(default_factory=rule.thresholds, description=rule.title))
        for rule in RULES
    }
    return create_model("RuleSettings", **fields)


# Every rule's thresholds, typed, as one settings section (`TRAINLENS_RULES__<CODE>__<FIELD>`).
RuleSettings: type[BaseModel] = _rule_settings_model()
