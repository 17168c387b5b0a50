"""The pieces of one training step, kept apart from the loop so tests can call them, and
how a running loop is asked to stop: a polled control object, and SIGTERM. A stop is
honoured between micro-batches, evaluation batches and sampled tokens."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from trainer.tokenizer import Tokenizer

Batch = tuple[torch.Tensor, torch.Tensor]


class TrainControl(Protocol):
    def should_stop(self) -> bool:
        """Polled once per step; True makes the loop checkpoint and return."""


class StopRequested(Exception):
    """A stop honoured inside a step, an evaluation or a sample: the partial work is dropped."""


def check_stop(should_stop: Callable[[], bool] | None) -> None:
    """Raise StopRequested if a stop was asked for (None: this caller cannot be interrupted)."""
    if should_stop is not None and should_stop():
        raise StopRequested


class StopFlag:
    """A thread-safe stop request, also settable from a signal handler."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def request_stop(self, reason: str = "stop requested") -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    def should_stop(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_sigterm(flag: StopFlag) -> Iterator[None]:
    """While inside, SIGTERM sets `flag` instead of killing the process.

    Only the main thread may install handlers; elsewhere this does nothing, and the
    caller's control object is the only way to stop.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        flag.request_stop("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StepValues(NamedTuple):
    """A step's numbers on the host. They leave the device together, in one `.tolist()`:
    each separate read would be a host sync that stalls the GPU's queue."""

    loss: float  # mean over micro-batches (and ranks)
    grad_norm: float  # before clipping
    stop_votes: float  # ranks that asked to stop
    instruments: list[float]  # LayerInstruments.metrics' vector; empty off instrument steps

    @classmethod
    def to_host(
        cls, scalars: dict[str, torch.Tensor], instruments: torch.Tensor | None
    ) -> StepValues:
        """`scalars`: a one-element tensor per scalar field, by name."""
        names = cls._fields[:-1]
        parts = [scalars[name].float().view(1) for name in names]
        if instruments is not None:
            parts.append(instruments.float().flatten())
        values = torch.cat(parts).tolist()  # the step's one device -> host transfer
        head, instrument_values = values[: len(names)], values[len(names) :]
        return cls(**dict(zip(names, head, strict=True)), instruments=instrument_values)


def forward_backward(
    model: nn.Module,
    next_batch: Callable[[], Batch],
    accum_steps: int,
    autocast: Any,
    scaler: torch.amp.GradScaler | None = None,
    collect_stats: bool = False,
    on_loss: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accumulate gradients over accum_steps micro-batches.

    Each micro-batch loss is divided by accum_steps, so the summed gradient is the
    gradient of the mean loss over the whole step, exactly as one big batch would give.
    Returns the step's mean loss (detached, on device) and the first micro-batch's
    activation statistics (n_layer, 8) when collect_stats. `on_loss(micro, loss)` may
    replace each micro-batch's loss before backward (faults). Raises StopRequested before
    a micro-batch when `should_stop()`: the caller drops the partial gradients.
    """
    total: torch.Tensor | None = None
    stats: torch.Tensor | None = None
    for micro in range(accum_steps):
        check_stop(should_stop)
        x, y = next_batch()
        if isinstance(model, DDP):
            # All-reduce gradients only once, after the last micro-batch.
            model.require_backward_grad_sync = micro == accum_steps - 1
        with autocast:
            _, loss, micro_stats = model(x, y, collect_stats=collect_stats and micro == 0)
        if micro == 0:
            stats = micro_stats
        loss = loss / accum_steps
        if on_loss is not None:
            loss = on_loss(micro, loss)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        total = loss.detach() if total is None else total + loss.detach()
    assert total is not None
    return total.float(), stats


@torch.no_grad()
def estimate_loss(
    model: nn.Module,
    batches: list[Batch],
    autocast: Any,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Mean loss over fixed batches in eval mode (no dropout), on device.

    Train mode is restored afterwards whatever the model's mode was on entry: the
    loop only evaluates between training steps. Raises StopRequested between batches
    when `should_stop()`.
    """
    model.eval()
    try:
        losses = []
        for x, y in batches:
            check_stop(should_stop)
            with autocast:
                _, loss, _ = model(x, y)
            losses.append(loss.float())
        return torch.stack(losses).mean()
    finally:
        model.train()


@torch.no_grad()
def sample_text(
    model: nn.Module,
    tokenizer: Tokenizer,
    device: torch.device,
    autocast: Any,
    seed: int,
    should_stop: Callable[[], bool] | None = None,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
) -> str:
    """A text sample from a newline prompt, with its own generator.

    The private generator keeps sampling out of the training RNG stream, so a run
    with samples and a resumed run without them stay bitwise identical. Generated one
    token per call so that a stop (StopRequested) is honoured between tokens.
    """
    try:
        prompt = tokenizer.encode("\n")
    except ValueError:  # a character vocabulary without newlines
        prompt = [0]
    idx = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, 1)
    generator = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    try:
        with autocast:
            for _ in range(max_new_tokens):
                check_stop(should_stop)
                idx = model.generate(idx, 1, temperature, generator=generator)  # (1, T + 1)
    finally:
        model.train()
    return tokenizer.decode(idx[0, len(prompt) :].tolist())
