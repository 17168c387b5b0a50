"""early_stop: the trainer's early-stopping action ended the run (its marker metric)."""

from __future__ import annotations

from app.rules.base import Observation, Rule, RunView, Thresholds

MARKER = "train/early_stopped"  # logged once, at the stop; its value is the best val loss


class EarlyStop(Rule):
    """The run was stopped early on purpose: its validation loss had not improved for
    the configured number of evaluations (`actions.early_stop`), so further steps were
    only fitting the training data. The weights at the best validation loss are kept in
    the best checkpoint (ckpt_best); the latest checkpoint is where training stopped."""

    code = "early_stop"
    title = "Stopped early: val loss stopped improving"
    severity = "info"
    fix = (
        "Use ckpt_best, the weights at the best val loss. To get further, add data, "
        "dropout or weight_decay, or a smaller model; to wait longer before stopping, "
        "raise actions.early_stop.patience or lower its min_delta."
    )
    thresholds = Thresholds
    keep_firing_for = 1_000_000  # a stop is final: the finding never resolves by itself

    def check(self, view: RunView, limits: Thresholds) -> list[Observation]:
        marker = view.new(MARKER)
        actions = view.config.get("actions")
        settings = (actions.get("early_stop") if isinstance(actions, dict) else None) or {}
        observations = []
        for step, best in zip(marker.steps, marker.values, strict=True):
            observations.append(
                Observation(
                    int(step),
                    True,
                    evidence={
                        "step": int(step),
                        "best_val_loss": float(best),
                        "patience": settings.get("patience"),
                        "min_delta": settings.get("min_delta"),
                    },
                    detail=(
                        f"Training stopped at step {int(step)}: val/loss had not improved for "
                        f"{settings.get('patience', '?')} evaluations; the best was "
                        f"{float(best):.4g}, kept in ckpt_best."
                    ),
                )
            )
        return observations
