"""PyTorch Lightning: a `Logger` that sends a `Trainer`'s metrics to trainlens.

    from trainlens.integrations.lightning import TrainlensLogger

    trainer = Trainer(logger=TrainlensLogger(name="my-run", config={"vocab_size": 50257}))

The run opens at the first metric (after Lightning has logged the module's
hyperparameters, so they are in the run's config) and finishes when the Trainer
finalizes the logger: `completed` after a successful fit, `failed` after an exception.
Common names become canonical keys (`train_loss` -> `train/loss`, `val_loss` ->
`val/loss`, LearningRateMonitor's `lr-AdamW` -> `train/lr`); the rest keep their names.
Only rank 0 logs. Importing this module imports lightning; `import trainlens` does not.
"""

from __future__ import annotations

import logging
import time
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

import trainlens
from trainlens.client import plain_json
from trainlens.integrations.keys import CONFIG_ALIASES, KeyMapper

log = logging.getLogger(__name__)

# Logger.finalize's status -> the run's status
FINAL_STATUS = {"success": "completed", "finished": "completed", "failed": "failed"}


class TrainlensLogger(Logger):
    """`name` names the run; `config` goes into the run's config with the module's
    hyperparameters (put vocab_size, max_steps, warmup_steps, grad_clip, schedule there:
    a logger does not see the Trainer's arguments); `url`, `token` and any other keyword
    go to `trainlens.init` (url and token default to TRAINLENS_URL / TRAINLENS_TOKEN).
    `version` names the checkpoint folder Lightning makes under `<name>/`: a time stamp
    unless given (the server's run id is `logger.experiment.id`)."""

    def __init__(
        self,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        url: str | None = None,
        token: str | None = None,
        version: str | None = None,
        **init_options: Any,
    ) -> None:
        super().__init__()
        self._name = name
        self._version = version or time.strftime("%Y%m%d-%H%M%S")
        self._config: dict[str, Any] = dict(config or {})
        self._init_options = {"url": url, "token": token, **init_options}
        self._run: trainlens.Run | None = None
        self._finished = False
        self._finished_id: int | None = None  # None offline, where the server has no id yet
        self._keys = KeyMapper()

    @property
    def name(self) -> str:
        return self._name or "trainlens"

    @property
    def version(self) -> str:
        return self._version

    @property
    def run_id(self) -> int | None:
        """The server's id of this logger's run (also once it finished)."""
        return self._run.id if self._run is not None else self._finished_id

    @property
    def experiment(self) -> trainlens.Run | _PendingRun | None:
        """The trainlens run: None on ranks other than 0 and once finalized. Until the
        first metric it is a stand-in that opens the run when used: Lightning asks for
        the experiment before it logs the module's hyperparameters, which belong in the
        config the run is opened with."""
        if getattr(rank_zero_only, "rank", 0) > 0 or self._finished:
            return None
        return self._run if self._run is not None else _PendingRun(self)

    def _open(self) -> trainlens.Run:
        if self._run is None:
            config = {**self._config, "framework": "lightning", "lightning_version": self.version}
            self._run = trainlens.init(name=self._name, config=config, **self._init_options)
        return self._run

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        params = vars(params) if isinstance(params, Namespace) else dict(params or {})
        hyperparams: dict[str, Any] = plain_json(params)
        for canonical, aliases in CONFIG_ALIASES.items():
            for alias in aliases:
                if canonical not in hyperparams and alias in hyperparams:
                    hyperparams[canonical] = hyperparams[alias]
        if self._run is not None or self._finished:
            # Lightning logs the module's hyperparameters before its first metric; the
            # server keeps the config a run was opened with, so a later call is too late.
            log.warning(
                "trainlens: run %s is already open; hyperparameters logged after its "
                "first metric are not in its config: %s",
                self.run_id,
                sorted(hyperparams),
            )
            return
        self._config = {**hyperparams, **self._config}

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._finished:
            log.warning(
                "trainlens: run %s has finished; metrics logged after the Trainer "
                "finalized its logger are not sent (use a new TrainlensLogger for a "
                "later trainer.test()): %s",
                self._finished_id,
                sorted(metrics),
            )
            return
        values = {self._keys.key(name): float(value) for name, value in metrics.items()}
        self._open().log(values, step=step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._finished:
            return
        run = self._open()  # a fit that failed before its first metric is a failed run too
        run.finish(status=FINAL_STATUS.get(status, "stopped"))
        self._finished, self._finished_id, self._run = True, run.id, None


class _PendingRun:
    """The logger's run before it is opened: any use opens it."""

    def __init__(self, logger: TrainlensLogger) -> None:
        self._logger = logger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger._open(), name)
