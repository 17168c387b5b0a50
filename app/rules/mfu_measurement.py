"""mfu_measurement: an MFU above 100%, which no device achieves: the measurement is wrong."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from app.rules.base import Observation, Rule, RunView, Thresholds

KEYS = ("perf/mfu", "perf/mfu_unreliable")


class MfuMeasurementThresholds(Thresholds):
    # an MFU above this is impossible (1.0 = the device's peak)
    max_mfu: float = Field(default=1.0, gt=0)


class MfuMeasurement(Rule):
    """The run reports a model FLOPs utilisation above 100% of the device's peak, which
    no device achieves. The number is a measurement error, not a property of the run:
    the peak it is divided by is too low (on a CPU, a matmul probe measured while the
    machine was busy, or a figure for the wrong device), or the FLOPs per step are
    overcounted. Such values are not MFU and are not judged as one (low_mfu ignores
    them); tokens per second is the reliable measure of speed for this run."""

    code = "mfu_measurement"
    title = "MFU above 100%: a measurement problem"
    # A note about the measurement, not about the run: an info, so a healthy run whose
    # CPU peak was probed under load raises no warning.
    severity = "info"
    fix = (
        "Compare throughput in tokens/s instead. On a GPU, check the device's peak figure "
        "(dense, at the training precision) and the FLOPs-per-token formula (6N plus "
        "attention); on a CPU, the peak is an estimate: measure it on an idle machine."
    )
    thresholds = MfuMeasurementThresholds
    keep_firing_for = 50  # an estimate that is wrong stays wrong: do not flap

    def check(self, view: RunView, limits: MfuMeasurementThresholds) -> list[Observation]:
        observations: list[Observation] = []
        for key in KEYS:
            new = view.new(key)
            for step, value in zip(new.steps.tolist(), new.values.tolist(), strict=True):
                if not np.isfinite(value):
                    continue
                if value <= limits.max_mfu:
                    observations.append(Observation(step, False))
                    continue
                estimated = len(view.series("perf/peak_estimated")) > 0
                detail = (
                    f"{key} was {100 * value:.0f}% at step {step}"
                    + (", against an estimated (probed) CPU peak" if estimated else "")
                    + ": above 100%, so the peak or the FLOP count is wrong."
                )
                evidence = {"key": key, "value": value, "step": step, "peak_estimated": estimated}
                observations.append(Observation(step, True, evidence=evidence, detail=detail))
        return observations
