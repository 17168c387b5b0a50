"""Hugging Face `transformers`: log a `Trainer`'s run to trainlens.

    from trainlens.integrations.transformers import TrainlensCallback

    trainer = Trainer(model, args, train_dataset=..., callbacks=[TrainlensCallback()])

The run opens when training begins and finishes when it ends (each `train()`, e.g. each
trial of a hyperparameter search, is a run of its own). Trainer's log names
become the canonical keys the rule engine judges (`loss` -> `train/loss`, `grad_norm`
-> `train/grad_norm`: the norm before clipping, `learning_rate` -> `train/lr`,
`eval_loss` -> `val/loss`, any other `eval_*` -> `val/*`); the rest keep their names.
The run's config carries what the rules need from the model and the TrainingArguments
(vocab_size, lr, warmup_steps, max_steps, grad_clip, schedule, min_lr). Only the main
process (rank 0) logs. Importing this module imports transformers; `import trainlens`
does not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback

import trainlens
from trainlens.client import plain_json
from trainlens.integrations.keys import KeyMapper, safe_name

log = logging.getLogger(__name__)

# Trainer's one-off summary at the end of training: not points of a series (its
# train_loss is the mean over the whole run, not the loss at the last step).
SUMMARY_KEYS = frozenset(
    {
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "train_loss",
        "total_flos",
    }
)
# HF scheduler names whose curve the rules know as a cosine (to min_lr, 0 by default)
COSINE_SCHEDULES = frozenset({"cosine", "cosine_with_min_lr", "cosine_warmup_with_min_lr"})


class TrainlensCallback(TrainerCallback):
    """A `TrainerCallback` that logs to a trainlens server. `name` defaults to
    `TrainingArguments.run_name`; `config` is merged over what the callback reads from
    the model and the arguments; `url`, `token` and any other keyword go to
    `trainlens.init` (url and token default to TRAINLENS_URL / TRAINLENS_TOKEN)."""

    def __init__(
        self,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        url: str | None = None,
        token: str | None = None,
        finish_on_train_end: bool = True,
        **init_options: Any,
    ) -> None:
        self.name = name
        self.config = dict(config or {})
        self.init_options = {"url": url, "token": token, **init_options}
        self.finish_on_train_end = finish_on_train_end
        self.run: trainlens.Run | None = None
        self._finished = False
        self._finished_id: int | None = None
        self._keys = KeyMapper()

    # -- TrainerCallback ------------------------------------------------------------

    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            # another train() (a hyperparameter search trial): a run of its own
            self._finished = False
            self._open(args, state, model)

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: Any = None,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if self._finished:  # a trainer.evaluate() after train() ended
            log.warning(
                "trainlens: run %s has finished; these logs are not sent (pass "
                "TrainlensCallback(finish_on_train_end=False) and call finish() yourself "
                "to log evaluations after training): %s",
                self._finished_id,
                sorted(logs),
            )
            return
        self._open(args, state, model)  # an evaluate() before train() opens it too
        assert self.run is not None
        summary = {key: value for key, value in logs.items() if key in SUMMARY_KEYS}
        if summary:
            self.run.summary.update(summary)
        metrics = {
            self._key(key): float(value)
            for key, value in logs.items()
            if key not in SUMMARY_KEYS and _is_number(value)
        }
        if metrics:
            self.run.log(metrics, step=state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.finish_on_train_end:
            self.finish()

    @property
    def run_id(self) -> int | None:
        """The server's id of the run this callback opened (also once it finished)."""
        return self.run.id if self.run is not None else self._finished_id

    def finish(self) -> None:
        """Finish the run (done at the end of training unless finish_on_train_end=False)."""
        if self.run is not None:
            self.run.finish()
            self._finished, self._finished_id = True, self.run.id
            self.run = None

    def _open(self, args: Any, state: Any, model: Any) -> None:
        if self.run is not None or self._finished:
            return
        config = {**run_config(args, state, model), **self.config}
        self.run = trainlens.init(
            name=self.name or _run_name(args), config=config, **self.init_options
        )

    # -- names ----------------------------------------------------------------------

    def _key(self, name: str) -> str:
        if name.startswith("eval_") and name != "eval_loss":
            return "val/" + safe_name(name.removeprefix("eval_"))
        if name.startswith("test_"):
            return "test/" + safe_name(name.removeprefix("test_"))
        return self._keys.key(name)


def run_config(args: Any, state: Any, model: Any) -> dict[str, Any]:
    """What the rule engine reads (the README's list), then the arguments and the model
    config in full for reference."""
    max_steps = int(state.max_steps) if state.max_steps and state.max_steps > 0 else None
    schedule = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
    config: dict[str, Any] = {
        "lr": float(args.learning_rate),
        "max_steps": max_steps,
        "warmup_steps": args.get_warmup_steps(max_steps) if max_steps else None,
        "grad_clip": float(args.max_grad_norm) if args.max_grad_norm else None,
        "schedule": "cosine" if schedule in COSINE_SCHEDULES else schedule,
        "batch_size": args.train_batch_size
        * args.gradient_accumulation_steps
        * max(1, args.world_size),
        "weight_decay": float(args.weight_decay),
        "seed": args.seed,
        "framework": "transformers",
    }
    if schedule in COSINE_SCHEDULES:
        config["min_lr"] = _min_lr(args, schedule)
    model_config = getattr(model, "config", None)
    vocab_size = getattr(model_config, "vocab_size", None)
    if isinstance(vocab_size, int):
        config["vocab_size"] = vocab_size
    if model is not None:
        config["n_params"] = sum(p.numel() for p in model.parameters())
    config["training_args"] = plain_json(args.to_sanitized_dict())
    if model_config is not None and hasattr(model_config, "to_json_string"):
        config["model"] = json.loads(model_config.to_json_string(use_diff=True))
    return {key: value for key, value in config.items() if value is not None}


def _min_lr(args: Any, schedule: str) -> float:
    """The floor of HF's cosine schedules: 0, or `min_lr` / `min_lr_rate` * lr from
    lr_scheduler_kwargs."""
    kwargs = args.lr_scheduler_kwargs if isinstance(args.lr_scheduler_kwargs, dict) else {}
    if schedule == "cosine" or not kwargs:
        return 0.0
    if "min_lr" in kwargs:
        return float(kwargs["min_lr"])
    return float(kwargs.get("min_lr_rate", 0.0)) * float(args.learning_rate)


def _run_name(args: Any) -> str | None:
    name = getattr(args, "run_name", None)
    return str(name) if name else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
