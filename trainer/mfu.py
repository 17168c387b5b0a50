"""Model FLOPs utilisation: achieved model FLOP/s over the device's peak.

The peak table is the one place device figures live. Figures are dense (no sparsity)
tensor-core TFLOP/s from the vendors' datasheets; "fp32" means TF32 tensor cores,
which the trainer enables for fp32 matmuls on CUDA. A device missing from the table
has an unknown peak and MFU is not reported: never a guess. On CPU the peak is the
rate of a short matmul probe measured once per process.
"""

from __future__ import annotations

import functools
import time

import torch

from trainer.config import TrainConfig

# (substrings that must all appear in the device name, {precision: dense TFLOP/s}).
# More specific names first: "H100 PCIe" must win over plain "H100".
PEAK_TFLOPS: list[tuple[tuple[str, ...], dict[str, float]]] = [
    (("GH200",), {"bf16": 989.0, "fp16": 989.0, "fp32": 494.0}),
    (("H200",), {"bf16": 989.0, "fp16": 989.0, "fp32": 494.0}),
    (("H100", "PCIe"), {"bf16": 756.0, "fp16": 756.0, "fp32": 378.0}),
    (("H100", "NVL"), {"bf16": 835.0, "fp16": 835.0, "fp32": 418.0}),
    (("H100",), {"bf16": 989.0, "fp16": 989.0, "fp32": 494.0}),  # SXM
    (("B200",), {"bf16": 2250.0, "fp16": 2250.0, "fp32": 1100.0}),
    (("A100",), {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0}),
    (("L40S",), {"bf16": 362.0, "fp16": 362.0, "fp32": 183.0}),
    (("A10G",), {}),  # no reliable public figure; listed so "A10" does not match it
    (("A10",), {"bf16": 125.0, "fp16": 125.0, "fp32": 62.5}),
    (("L40",), {"bf16": 181.0, "fp16": 181.0, "fp32": 90.5}),
    (("L4",), {"bf16": 121.0, "fp16": 121.0, "fp32": 60.0}),
    (("V100",), {"fp16": 125.0, "fp32": 15.7}),
    (("T4",), {"fp16": 65.0, "fp32": 8.1}),
]


def table_peak_flops(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s for a named GPU and precision, or None when not in the table."""
    for needles, peaks in PEAK_TFLOPS:
        if all(needle in device_name for needle in needles):
            tflops = peaks.get(precision)
            return tflops * 1e12 if tflops is not None else None
    return None


_PROBE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def cpu_peak_flops(precision: str, max_n: int = 1024, repeats: int = 7) -> float:
    """Best observed FLOP/s of a square matmul on this CPU, measured once per process:
    an estimate (the run logs `perf/peak_estimated`), not a datasheet figure.

    The size doubles from 256 until one matmul takes >= 20 ms (or max_n), so the probe
    reaches the BLAS's steady rate in fp32 (~0.2 s in all) without spending seconds on
    CPUs that emulate fp16/bf16. Best of several repeats: a busy machine only slows a
    probe down, and a slow probe is a peak too low (an MFU above 100%).
    """
    dtype = _PROBE_DTYPES[precision]
    generator = torch.Generator().manual_seed(0)
    n, best = 256, float("inf")
    while True:
        a = torch.randn(n, n, generator=generator).to(dtype)
        b = torch.randn(n, n, generator=generator).to(dtype)
        torch.mm(a, b)  # warm-up: thread pool, kernel selection
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        if best >= 0.02 or n >= max_n:
            return 2 * n**3 / best
        n *= 2


def device_peak_flops(device: torch.device, precision: str) -> float | None:
    """Peak FLOP/s of one device at a precision; None when unknown."""
    if device.type == "cuda":
        return table_peak_flops(torch.cuda.get_device_name(device), precision)
    if device.type == "cpu":
        return cpu_peak_flops(precision)
    return None


def flops_per_token(config: TrainConfig, n_params: int) -> float:
    """6N for the matmuls (forward + backward) plus 12·L·H·Q·T for attention (PaLM, App. B).

    N counts non-embedding-lookup parameters: the position table does no matmul, the
    tied token table does (as the LM head).
    """
    attention = 12 * config.n_layer * config.n_head * config.head_size * config.block_size
    return 6 * n_params + attention
