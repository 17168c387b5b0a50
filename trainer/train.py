"""The training loop: read top to bottom.

`train()` builds the run (data, model, optimizer, maybe DDP), then for each step:
evaluate and sample on schedule, set the LR, accumulate gradients, clip, step, and
log one row of metrics. The step's numbers leave the device in one `.tolist()`.
Checkpoints are written every checkpoint_interval steps, on stop and at the end, never
from a non-finite state; the best-by-val checkpoint is written at evals.

A stop (SIGTERM) is honoured between micro-batches, eval batches and sampled tokens,
not only between steps: the worker kills a run that is slow to stop. A step it
interrupts is dropped whole (no update, no metrics row) and the checkpoint holds the
state before it, RNG included, so a resume runs that step again as if never begun.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from trainer.checkpoint import (
    BEST,
    LATEST,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    write_checkpoint_info,
)
from trainer.config import TrainConfig
from trainer.data import Batches, data_seed, make_splits
from trainer.distributed import (
    DistInfo,
    all_reduce_sum,
    autocast_context,
    configure_backends,
    env_world_size,
    gather_to_main,
    init_distributed,
    make_grad_scaler,
    resolve_device,
    shutdown_distributed,
)
from trainer.faults import Faults
from trainer.instruments import LayerInstruments, memory_gb, resident_bytes
from trainer.memory import estimate_memory
from trainer.mfu import device_peak_flops, flops_per_token
from trainer.model import GPT, build_model, build_optimizer
from trainer.schedule import LRRangeTest, config_lr, set_lr
from trainer.sink import MetricSink
from trainer.stats import is_loss_spike
from trainer.steps import (
    StepValues,
    StopFlag,
    StopRequested,
    TrainControl,
    check_stop,
    estimate_loss,
    forward_backward,
    sample_text,
    stop_on_sigterm,
)
from trainer.timing import TimingLog
from trainer.tokenizer import build_tokenizer, tokenizer_from_state

__all__ = ["TrainControl", "TrainResult", "train"]

log = logging.getLogger(__name__)

SPIKE_WINDOW = 128  # losses the spike detector compares against
SPIKE_MIN_HISTORY = 64  # before this many, every step is taken
# Trained BPE tokenizers, shared by the runs beside out_dir (the data dir's runs/).
TOKENIZER_CACHE = "_tokenizers"


@dataclass
class TrainResult:
    status: Literal["completed", "stopped"]
    step: int  # optimizer steps completed
    best_val_loss: float | None = None
    last_loss: float | None = None
    reason: str | None = None  # why a stopped run stopped
    checkpoint: Path | None = None  # the latest checkpoint written, if any


class _Restart(Exception):
    """Raised by the restart_at_step fault: tear down and resume in-process."""


def train(
    config: TrainConfig,
    text: str,
    out_dir: Path,
    sink: MetricSink,
    control: TrainControl | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train on `text`, logging to `sink` and checkpointing under `out_dir`.

    Stops when `control.should_stop()` (polled once per step) or SIGTERM asks: a
    checkpoint of the last completed step is written and the sink flushed. SIGTERM is
    heard mid-step (see the module docstring); under DDP, where every rank must finish
    the step's collectives, only between steps. Under torchrun every rank calls this;
    only rank 0 logs and writes files. The sink is flushed, not closed.
    """
    out_dir = Path(out_dir)
    requested = resolve_device(config.device).type
    dist_info = init_distributed(requested)
    if dist_info.world_size != config.nproc:
        raise ValueError(
            f"nproc ({config.nproc}) does not match the {env_world_size()} process(es) launched"
        )
    flag = StopFlag()
    try:
        with stop_on_sigterm(flag):
            while True:
                try:
                    return _Run(config, text, out_dir, sink, control, flag, dist_info).loop(resume)
                except _Restart:
                    resume = True
    finally:
        shutdown_distributed(dist_info)


class _Run:
    """State of one (re)start of a run; `loop` trains until done, stopped or restarted."""

    def __init__(
        self,
        config: TrainConfig,
        text: str,
        out_dir: Path,
        sink: MetricSink,
        control: TrainControl | None,
        flag: StopFlag,
        dist_info: DistInfo,
    ) -> None:
        self.config, self.text, self.out_dir, self.sink = config, text, out_dir, sink
        self.control, self.flag, self.dist = control, flag, dist_info
        # Polled inside steps, evals and samples. Not under DDP: a rank that left a step
        # early would leave the others waiting in its all-reduce forever.
        self.interrupt = None if dist_info.enabled else flag.should_stop
        self.device = resolve_device(config.device, dist_info.local_rank)
        configure_backends(self.device)
        self.autocast = autocast_context(config, self.device)
        self.faults = Faults(config.faults)
        self.best_val_loss: float | None = None
        self.last_val_loss: float | None = None
        self.evals_without_improvement = 0  # for actions.early_stop
        self.early_stop_reason: str | None = None
        self.lr_finder_reason: str | None = None
        self.last_checkpoint: Path | None = None
        self.last_checkpoint_step: int | None = None
        self.timing = TimingLog(out_dir, enabled=dist_info.is_main)  # timing.json

    # -- setup ---------------------------------------------------------------------------

    def _setup(self, resume: bool) -> int:
        """Build everything; returns the step to start at."""
        config, rank = self.config, self.dist.rank
        self.rss_baseline = resident_bytes()
        checkpoint_path = latest_checkpoint(self.out_dir) if resume else None
        if resume and checkpoint_path is None:
            log.warning("resume requested but %s has no checkpoint; starting fresh", self.out_dir)
        state = load_checkpoint(checkpoint_path, self.device) if checkpoint_path else None
        self.resumed = state is not None

        log.info("preparing data (%s tokenizer)", config.tokenizer)
        if state is not None:
            self.tokenizer = tokenizer_from_state(state["tokenizer"])
        else:
            cache = self.out_dir.parent / TOKENIZER_CACHE
            self.tokenizer = build_tokenizer(config.tokenizer, self.text, config.vocab_size, cache)
        self.batches = Batches(
            config, make_splits(config, self.text, self.tokenizer), self.device, rank
        )

        log.info("building the model")
        self.model: GPT = build_model(config, self.tokenizer.vocab_size).to(self.device)
        self.optimizer = build_optimizer(self.model, config, self.device.type)
        self.scaler = make_grad_scaler(config, self.device)
        start_step = 0
        if state is None:
            # Dropout streams differ per rank; the weights above are identical on all ranks.
            torch.manual_seed(config.seed + rank)
        else:
            start_step = self._restore(state)
            self.last_checkpoint, self.last_checkpoint_step = checkpoint_path, start_step

        if config.compile:
            log.info("compiling the model (the first steps are slow)")
        compiled = torch.compile(self.model) if config.compile else self.model
        self.eval_model = compiled
        self.train_model = compiled
        if self.dist.enabled:
            device_ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.train_model = DDP(compiled, device_ids=device_ids)
        self.instruments = LayerInstruments(self.model, config.n_layer)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.flops_per_token = flops_per_token(config, self.model.num_params())
        self.peak_flops = device_peak_flops(self.device, config.precision)
        self.mem_estimate_gb = estimate_memory(config, self.tokenizer.vocab_size).total_bytes / 1e9
        return start_step

    def _restore(self, state: dict[str, Any]) -> int:
        self.model.load_state_dict(state["model"])
        if self.faults.keeps_optimizer_on_resume():
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best_val_loss = state.get("best_val_loss")
        self.evals_without_improvement = int(state.get("evals_without_improvement", 0))
        rng_states = state["rng"]
        if len(rng_states) == self.dist.world_size:
            restore_rng_state(rng_states[self.dist.rank])
            self.batches.generator.set_state(rng_states[self.dist.rank]["data"])
        else:
            # A different process count cannot continue the old streams; derive fresh ones
            # from the step so the data order does not replay from the start.
            log.warning("world size changed since the checkpoint; RNG streams reseeded")
            step_seed = self.config.seed + 7919 * int(state["step"])
            torch.manual_seed(step_seed + self.dist.rank)
            self.batches.generator.manual_seed(data_seed(step_seed, self.dist.rank))
        return int(state["step"])

    # -- checkpoints ---------------------------------------------------------------------

    def _state_is_finite(self) -> bool:
        norms = torch.stack(torch._foreach_norm([p.detach() for p in self.params]))
        return bool(torch.isfinite(norms).all())

    def _rng_state(self) -> dict[str, Any]:
        rng = capture_rng_state()
        rng["data"] = self.batches.generator.get_state()
        return rng

    def _save(self, name: str, next_step: int, rng: dict[str, Any] | None = None) -> None:
        """Checkpoint (a collective under DDP: every rank calls it, rank 0 writes).

        `rng`: the RNG state to store, when the current one is past `next_step`'s start."""
        all_rng = gather_to_main(rng or self._rng_state(), self.dist)
        if not self.dist.is_main:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": next_step,
            "best_val_loss": self.best_val_loss,
            "evals_without_improvement": self.evals_without_improvement,
            "config": self.config.model_dump(mode="json"),
            "tokenizer": self.tokenizer.state(),
            "rng": all_rng,
            "world_size": self.dist.world_size,
        }
        path = self.out_dir / name
        t0 = time.perf_counter()
        save_checkpoint(state, path)
        self.timing.checkpoint(time.perf_counter() - t0)
        val_loss = self.best_val_loss if name == BEST else self.last_val_loss
        write_checkpoint_info(path, {"step": next_step, "val_loss": val_loss})
        log.info("saved %s (resumes at step %d)", path.name, next_step)
        if name == LATEST:
            self.last_checkpoint, self.last_checkpoint_step = path, next_step
            self.faults.after_checkpoint()

    # -- the loop ------------------------------------------------------------------------

    def loop(self, resume: bool) -> TrainResult:
        config = self.config
        start_step = self._setup(resume)
        history: deque[float] = deque(maxlen=SPIKE_WINDOW)  # recent finite losses
        last_loss: float | None = None
        finder = LRRangeTest(config.lr_finder) if config.lr_finder is not None else None

        for step in range(start_step, config.max_steps):
            if self.faults.restarts_before(step, start_step):
                if self._state_is_finite():
                    self._save(LATEST, step)
                self.sink.flush()
                raise _Restart
            rng_before_step = self._rng_state()
            try:
                metrics = self._between_steps(step, first=step == start_step)
                if self.early_stop_reason is not None:
                    # The eval before this step said stop: log it and keep the weights it scored.
                    if self.dist.is_main:
                        self.sink.log(step, metrics, time.time())
                    if self._state_is_finite():
                        self._save(LATEST, step)
                    return self._result("completed", step, last_loss, self.early_stop_reason)
                lr = config_lr(config, step)
                set_lr(self.optimizer, lr)
                instrument = step % config.instrument_interval == 0

                t0 = time.perf_counter()
                values, skipped = self._train_step(step, instrument, history)
                step_time = time.perf_counter() - t0
                self.timing.step(step_time)
            except StopRequested:
                return self._stop_before(step, rng_before_step, last_loss)
            loss, grad_norm = values.loss, values.grad_norm

            # With a GradScaler a non-finite gradient is routine: the scaler skips the
            # step and lowers the scale, so it is reported as a skip, not as a fault.
            scaler_skip = self.scaler is not None and not math.isfinite(grad_norm)
            metrics["train/loss"] = loss
            if not scaler_skip:
                metrics["train/grad_norm"] = grad_norm
            metrics["train/grad_clipped"] = float(0 < config.grad_clip < grad_norm)
            metrics["train/lr"] = lr
            if config.actions.skip_loss_spikes or self.scaler is not None:
                metrics["train/skipped"] = float(skipped or scaler_skip)
            metrics.update(self._perf(step_time))
            if instrument:
                metrics.update(self.instruments.metrics(values.instruments))
            finder_done = finder is not None and self._lr_finder_step(finder, step, metrics)
            if self.dist.is_main:
                self.sink.log(step, metrics, time.time())
                if instrument:  # a progress line for the run's log, as nanoGPT prints
                    log.info(
                        "step %d: loss %.4f, lr %.3g, %.1f ms, %.0f tokens/s",
                        step,
                        loss,
                        lr,
                        step_time * 1000,
                        metrics["perf/tokens_per_sec"],
                    )
            if finder_done:
                return self._result("completed", step + 1, last_loss, self.lr_finder_reason)

            if math.isfinite(loss):
                history.append(loss)
                last_loss = loss
            nonfinite = not math.isfinite(loss) or (
                not math.isfinite(grad_norm) and not scaler_skip
            )
            if nonfinite and not skipped and config.actions.stop_on_nonfinite:
                reason = f"non-finite loss or gradient at step {step}"
                return self._result("stopped", step + 1, last_loss, reason)

            stop = values.stop_votes > 0
            done = step == config.max_steps - 1
            if stop or done or (step + 1) % config.checkpoint_interval == 0:
                if not nonfinite and self._state_is_finite():
                    self._save(LATEST, step + 1)
                self.sink.flush()
            if stop:
                return self._result(
                    "stopped", step + 1, last_loss, self.flag.reason or "stop requested"
                )
        return self._result("completed", config.max_steps, last_loss, None)

    def _stop_before(
        self, step: int, rng_before_step: dict[str, Any], last_loss: float | None
    ) -> TrainResult:
        """Stopped inside `step`: drop its partial gradients and checkpoint the state
        before it (weights, optimizer and RNG), so a resume begins `step` afresh."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.last_checkpoint_step != step and self._state_is_finite():
            self._save(LATEST, step, rng_before_step)
        return self._result("stopped", step, last_loss, self.flag.reason or "stop requested")

    def _between_steps(self, step: int, first: bool) -> dict[str, float]:
        """Markers, evaluation and samples due before `step` trains (not timed)."""
        config = self.config
        metrics: dict[str, float] = {}
        if first:
            metrics["data/vocab_size"] = float(self.tokenizer.vocab_size)
            if self.peak_flops is not None and self.device.type == "cpu":
                metrics["perf/peak_estimated"] = 1.0  # MFU against a probed CPU peak
            if self.resumed:
                metrics["train/resumed"] = 1.0  # the resume_discontinuity rule keys on it
        check_stop(self.interrupt)
        if step % config.eval_interval == 0 or step == config.max_steps - 1:
            metrics.update(self._evaluate(step))
        if self.dist.is_main and step > 0 and step % config.sample_interval == 0:
            seed = config.seed + step
            text = sample_text(
                self.model, self.tokenizer, self.device, self.autocast, seed, self.interrupt
            )
            self.sink.sample(step, text)
        return metrics

    def _train_step(
        self, step: int, instrument: bool, history: deque[float]
    ) -> tuple[StepValues, bool]:
        """Accumulate, clip, maybe skip, update. Returns the step's numbers (one transfer)
        and whether it skipped."""
        config = self.config
        loss, act_stats = forward_backward(
            self.train_model,
            functools.partial(self.batches.train_batch, step),
            config.grad_accum_steps,
            self.autocast,
            self.scaler,
            collect_stats=instrument,
            on_loss=functools.partial(self.faults.on_loss, step),
            should_stop=self.interrupt,
        )
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip and measure true gradients
        layer_grads = self.instruments.grad_stats() if instrument else None
        grad_norm = torch.nn.utils.get_total_norm(
            [p.grad for p in self.params if p.grad is not None]
        )
        if config.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.params, config.grad_clip, grad_norm)

        # Loss and stop requests are combined across ranks in one all-reduce; the
        # gradients (hence grad_norm) are already global after DDP's backward.
        local_stop = self.flag.should_stop() or (
            self.control is not None and self.control.should_stop()
        )
        shared = torch.stack((loss, torch.tensor(float(local_stop), device=self.device)))
        all_reduce_sum(shared, self.dist)
        loss = shared[0] / self.dist.world_size

        skipped = False
        if config.actions.skip_loss_spikes:
            # The decision must precede the update, so this costs one extra sync.
            loss_now, norm_now = torch.stack((loss, grad_norm.float())).tolist()
            skipped = not math.isfinite(norm_now) or is_loss_spike(
                history, loss_now, config.actions.spike_zscore, SPIKE_MIN_HISTORY
            )
        if instrument:
            self.instruments.snapshot()
        if self.scaler is not None:
            if not skipped:
                self.scaler.step(self.optimizer)  # skips by itself on inf/nan gradients
            self.scaler.update()
        elif not skipped:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

        instruments = None
        if instrument:
            assert act_stats is not None and layer_grads is not None
            update = self.instruments.param_and_update()
            # In the order LayerInstruments.metrics reads them.
            instruments = torch.cat((act_stats.flatten(), layer_grads.flatten(), update.flatten()))
        scalars = {"loss": loss, "grad_norm": grad_norm, "stop_votes": shared[1]}
        return StepValues.to_host(scalars, instruments), skipped

    def _result(
        self,
        status: Literal["completed", "stopped"],
        step: int,
        last_loss: float | None,
        reason: str | None,
    ) -> TrainResult:
        self.sink.flush()
        if self.dist.is_main:
            log.info("%s at step %d%s", status, step, f": {reason}" if reason else "")
        return TrainResult(
            status, step, self.best_val_loss, last_loss, reason, self.last_checkpoint
        )

    def _evaluate(self, step: int) -> dict[str, float]:
        """val/loss and train/loss_eval over the fixed eval windows; best checkpoint."""
        t0 = time.perf_counter()
        pair = torch.stack(
            [
                estimate_loss(
                    self.eval_model, self.batches.eval_batches(split), self.autocast, self.interrupt
                )
                for split in ("val", "train")
            ]
        )
        val_loss, train_loss = (all_reduce_sum(pair, self.dist) / self.dist.world_size).tolist()
        self.timing.eval(time.perf_counter() - t0)
        self.last_val_loss = val_loss if math.isfinite(val_loss) else None
        if self.dist.is_main:
            log.info("step %d: val loss %.4f, train loss %.4f (eval)", step, val_loss, train_loss)
        metrics = {"val/loss": val_loss, "train/loss_eval": train_loss}
        early_stop = self.config.actions.early_stop
        min_delta = early_stop.min_delta if early_stop is not None else 0.0
        previous_best = self.best_val_loss
        finite = math.isfinite(val_loss)
        # Early stopping counts evaluations without an improvement of more than min_delta;
        # the best checkpoint follows every improvement, however small.
        if finite and (previous_best is None or val_loss < previous_best - min_delta):
            self.evals_without_improvement = 0
        else:
            self.evals_without_improvement += 1
        if finite and (previous_best is None or val_loss < previous_best):
            self.best_val_loss = val_loss
            if step > 0 and self._state_is_finite():
                self._save(BEST, step)  # the weights that scored it: before this step's update
        if early_stop is not None and self.evals_without_improvement >= early_stop.patience:
            metrics.update(self._early_stop(step, early_stop.patience, min_delta))
        return metrics

    def _early_stop(self, step: int, patience: int, min_delta: float) -> dict[str, float]:
        """actions.early_stop: end the run after this step; ckpt_best keeps the best weights.

        The `train/early_stopped` marker (its value: the best val loss) is what the
        `early_stop` rule turns into a finding."""
        best = self.best_val_loss if self.best_val_loss is not None else math.nan
        self.early_stop_reason = (
            f"early stop at step {step}: val/loss has not improved by more than {min_delta:g} "
            f"for {patience} evaluations (best {best:.4g}); ckpt_best holds the best weights"
        )
        return {"train/early_stopped": best}

    def _lr_finder_step(self, finder: LRRangeTest, step: int, metrics: dict[str, float]) -> bool:
        """Feed the LR range test; True (and the suggestion in metrics) when it is done."""
        diverged = finder.observe(metrics["train/lr"], metrics["train/loss"])
        if finder.smoothed is not None:
            metrics["lr_finder/smoothed_loss"] = finder.smoothed
        if not diverged and step < self.config.max_steps - 1:
            return False
        suggestion = finder.suggestion()
        how = f"diverged at lr {metrics['train/lr']:.3g}" if diverged else "reached end_lr"
        if suggestion is None:
            self.lr_finder_reason = f"LR range test {how} before any finite loss"
        else:
            metrics["lr_finder/suggested_lr"] = suggestion
            self.lr_finder_reason = (
                f"LR range test {how}; suggested lr {suggestion:.3g} "
                f"(a tenth of the lr at the smoothed loss's minimum)"
            )
        return True

    def _perf(self, step_time: float) -> dict[str, float]:
        tokens_per_sec = self.config.tokens_per_step / step_time
        perf = {
            "perf/tokens_per_sec": tokens_per_sec,
            "perf/step_ms": step_time * 1000.0,
            "sys/mem_gb": memory_gb(self.device, self.rss_baseline),
            "sys/mem_estimate_gb": self.mem_estimate_gb,
        }
        if self.peak_flops is not None:
            achieved = self.flops_per_token * tokens_per_sec
            mfu = achieved / (self.peak_flops * self.dist.world_size)
            # Above 100% the peak is wrong (a CPU probe slowed by load), not the model:
            # logged apart, so it is never shown or judged as an MFU.
            perf["perf/mfu" if mfu <= 1.0 else "perf/mfu_unreliable"] = mfu
        return perf
