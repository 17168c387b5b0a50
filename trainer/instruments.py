"""Per-layer instruments: gradient, parameter and update norms, activation statistics.

Everything is computed on the device with foreach kernels and index_add, and leaves the
device as part of the step's single `.tolist()`: an instrument step adds no host sync.
Per layer: gradient norm, fraction of exactly-zero gradient entries (fp16 underflow),
parameter norm and update ratio. Layers are "wte" (tied with the LM head), "wpe",
"h0".."h{L-1}", "ln_f"; activation statistics use "h{i}.mlp" (the MLP pre-activation)
and "h{i}.resid" (the residual stream after block i).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psutil
import torch
import torch.nn as nn
from torch._C._profiler import _EventType

from trainer.model import MLP_STATS, RESID_STATS, layer_names, layer_of


class LayerInstruments:
    """Per-layer norms for one (unwrapped) model."""

    def __init__(self, model: nn.Module, n_layer: int) -> None:
        named = list(model.named_parameters())  # tied weights appear once
        self.params = [p for _, p in named]
        self.layers = layer_names(n_layer)
        position = {layer: i for i, layer in enumerate(self.layers)}
        device = self.params[0].device
        self.layer_index = torch.tensor([position[layer_of(n)] for n, _ in named], device=device)
        sizes = torch.tensor([float(p.numel()) for p in self.params], device=device)
        self.layer_numel = torch.zeros(len(self.layers), device=device).index_add_(
            0, self.layer_index, sizes
        )  # (n_layers,)
        self.n_layer = n_layer
        self._before: list[torch.Tensor] | None = None

    def _per_layer(self, norms: list[torch.Tensor]) -> torch.Tensor:
        """Combine per-parameter L2 norms into per-layer L2 norms, (n_layers,)."""
        squares = torch.stack(norms).float().square()  # (P,)
        total = torch.zeros(len(self.layers), device=squares.device)
        return total.index_add_(0, self.layer_index, squares).sqrt()  # (n_layers,)

    def grad_stats(self) -> torch.Tensor:
        """Per-layer gradient norms and fractions of exactly-zero entries, (2, n_layers).

        Call before clipping, to see what backward produced. Exact zeros are how fp16
        underflow shows (a GradScaler exists to prevent them); fp32 gradients are
        almost never exactly zero.
        """
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        zeros = torch.stack([(g == 0).sum() for g in grads]).float()  # (P,)
        zero_count = torch.zeros_like(self.layer_numel).index_add_(0, self.layer_index, zeros)
        return torch.stack(
            (self._per_layer(torch._foreach_norm(grads)), zero_count / self.layer_numel)
        )

    def snapshot(self) -> None:
        """Remember the weights before the optimizer step (for the update ratio)."""
        self._before = [p.detach().clone() for p in self.params]

    def param_and_update(self) -> torch.Tensor:
        """Pre-step parameter norms and ||dW||/||W|| per layer, as (2, n_layers)."""
        if self._before is None:
            raise RuntimeError("snapshot() must be called before the optimizer step")
        after = [p.detach() for p in self.params]
        deltas = torch._foreach_sub(after, self._before)
        param_norm = self._per_layer(torch._foreach_norm(self._before))
        update_norm = self._per_layer(torch._foreach_norm(deltas))
        self._before = None
        return torch.stack((param_norm, update_norm / param_norm.clamp_min(1e-12)))

    @property
    def size(self) -> int:
        """Number of values in one flattened instrument vector."""
        return self.n_layer * (len(MLP_STATS) + len(RESID_STATS)) + 4 * len(self.layers)

    def metrics(self, values: list[float]) -> dict[str, float]:
        """Name the flat vector [act (L, 8), grad norm, grad zeros, param, update (n each)]."""
        out: dict[str, float] = {}
        it = iter(values)
        for i in range(self.n_layer):
            for stat in MLP_STATS:
                out[f"act/h{i}.mlp/{stat}"] = next(it)
            for stat in RESID_STATS:
                out[f"act/h{i}.resid/{stat}"] = next(it)
        kinds = (("grad", "norm"), ("grad", "frac_zero"), ("param", "norm"), ("update", "ratio"))
        for kind, suffix in kinds:
            for layer in self.layers:
                out[f"{kind}/{layer}/{suffix}"] = next(it)
        return out


def resident_bytes() -> int:
    """This process's resident set size now."""
    return psutil.Process().memory_info().rss


def memory_gb(device: torch.device, rss_baseline: int) -> float:
    """Peak memory of this run in GB.

    CUDA: torch.cuda.max_memory_allocated, the peak of allocated tensors. Elsewhere the
    RSS delta: the process's peak resident set size minus `rss_baseline`, its size when
    the run's setup began, so the interpreter and libraries are left out. It counts
    the allocator's slack too, so it reads somewhat above the tensor estimate.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak_bytes = peak if sys.platform == "darwin" else peak * 1024
    return max(0, peak_bytes - rss_baseline) / 1e9


def profiled_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak growth of tensor allocations on the CPU while fn runs, in bytes.

    Read from the profiler's allocation events (every tensor allocation and free, in
    order), so it counts tensors only: not the allocator's caching, the interpreter or
    shared libraries, which make RSS a blunt measure for small models. Slow (the
    profiler records every op): for tests and benchmarks, not for every step.
    """
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        fn()
    changes = sorted(
        (event.start_time_ns, event.typed[1].alloc_size)
        for event in _walk(prof.profiler.kineto_results.experimental_event_tree())
        if event.typed[0] == _EventType.Allocation and event.typed[1].device.type == "cpu"
    )
    level = peak = 0
    for _, size in changes:
        level += size
        peak = max(peak, level)
    return peak


def _walk(events: list[Any]) -> Iterator[Any]:
    for event in events:
        yield event
        yield from _walk(event.children)


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes held by distinct tensor storages (shared storages counted once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())
