"""Trainer throughput and instrument overhead (prints figures; never part of `make test`).

    python -m bench.bench_trainer                 # CPU: tokens/s and instrument overhead
    python -m bench.bench_trainer --gpt2          # + GPT-2 124M shape (CUDA: bf16 + compile)

Instrument overhead is measured in the same run, on the real training loop: the run
instruments every 4th step, so instrumented and plain steps interleave under the same
machine load; the median extra cost of an instrumented step is then amortised over the
default interval: overhead = (t_instrumented - t_plain) / default_interval / t_plain.
The figure is the median over repeated runs. `--on-off` adds a cross-check (separate runs
at the default interval and with instruments off; only meaningful on a quiet machine).
Step times come from the loop's own perf/step_ms (eval, samples and checkpoints excluded).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trainer.config import TrainConfig
from trainer.corpus import builtin_corpus
from trainer.distributed import autocast_context, configure_backends, resolve_device
from trainer.mfu import device_peak_flops, flops_per_token
from trainer.model import GPT, build_optimizer
from trainer.sink import MemorySink
from trainer.steps import forward_backward
from trainer.train import train

QUIET = {"eval_interval": 10**6, "sample_interval": 10**6, "checkpoint_interval": 10**6}
WARMUP_STEPS = 5  # first steps pay for allocator and thread-pool warm-up


def loop_step_times(config: TrainConfig, text: str) -> tuple[list[int], list[float]]:
    sink = MemorySink()
    with tempfile.TemporaryDirectory() as out:
        train(config, text, Path(out), sink)
    return sink.series("perf/step_ms")


MEASURE_INTERVAL = 4  # instrument every 4th step while measuring: many samples of each


def same_run_overhead(config: TrainConfig, text: str) -> tuple[float, float, float]:
    """Median plain and instrumented step ms of one run, and the overhead amortised over
    config.instrument_interval."""
    measured = config.model_copy(update={"instrument_interval": MEASURE_INTERVAL})
    steps, times = loop_step_times(measured, text)
    timed = [(s, t) for s, t in zip(steps, times, strict=True) if s >= WARMUP_STEPS]
    instrumented = statistics.median(t for s, t in timed if s % MEASURE_INTERVAL == 0)
    plain = statistics.median(t for s, t in timed if s % MEASURE_INTERVAL != 0)
    return plain, instrumented, (instrumented - plain) / config.instrument_interval / plain


def on_off_overhead(config: TrainConfig, text: str, repeats: int) -> tuple[float, float]:
    """Median over interleaved repeats of the mean step ms, instruments on and off."""
    off_config = config.model_copy(update={"instrument_interval": 10**6})  # step 0 only
    on, off = [], []
    for _ in range(repeats):
        for cfg, bucket in ((config, on), (off_config, off)):
            steps, times = loop_step_times(cfg, text)
            bucket.append(statistics.mean(t for s, t in zip(steps, times, strict=True)
                                          if s >= WARMUP_STEPS))  # fmt: skip
    return statistics.median(on), statistics.median(off)


def bench_cpu(steps: int, repeats: int, on_off: bool) -> None:
    text = builtin_corpus()
    config = TrainConfig(device="cpu", max_steps=steps, warmup_steps=0, **QUIET)
    tokens = config.tokens_per_step
    print(f"CPU, default config ({config.n_layer}x{config.n_embd}, B={config.batch_size}, "
          f"T={config.block_size}), {torch.get_num_threads()} threads, "
          f"instrument_interval={config.instrument_interval}")  # fmt: skip
    plains, instrumented, overheads = [], [], []
    for _ in range(repeats):
        plain, instr, overhead = same_run_overhead(config, text)
        plains.append(plain)
        instrumented.append(instr)
        overheads.append(overhead)
    plain = statistics.median(plains)
    print(f"  tokens/s (median plain step):          {tokens / plain * 1000:,.0f}")
    print(f"  step ms plain / instrumented (median): {plain:.1f} / "
          f"{statistics.median(instrumented):.1f}")  # fmt: skip
    per_run = ", ".join(f"{100 * o:.2f}%" for o in overheads)
    print(f"  instrument overhead at interval {config.instrument_interval}: "
          f"{100 * statistics.median(overheads):.2f}%  (same run; median of {repeats} runs "
          f"of {steps} steps; per run: {per_run})")  # fmt: skip
    if not on_off:
        return
    on, off = on_off_overhead(config, text, repeats)
    print(f"  mean step ms on / off:                {on:.1f} / {off:.1f}")
    print(f"  instrument overhead, on vs off:       {100 * (on / off - 1):.2f}%"
          f"  (median of {repeats} interleaved pairs)")  # fmt: skip


def bench_shape(config: TrainConfig, vocab_size: int, steps: int) -> None:
    """Synthetic-data throughput and MFU of one model shape with the loop's step code."""
    device = resolve_device(config.device)
    configure_backends(device)
    torch.manual_seed(0)
    model = GPT(config, vocab_size).to(device)
    n_params = model.num_params()
    optimizer = build_optimizer(model, config, device.type)
    compiled = torch.compile(model) if config.compile else model
    autocast = autocast_context(config, device)
    batch = torch.randint(vocab_size, (config.batch_size, config.block_size + 1), device=device)
    x, y = batch[:, :-1], batch[:, 1:]  # (B, T), (B, T)
    times = []
    for step in range(steps):
        start = time.perf_counter()
        forward_backward(compiled, lambda: (x, y), config.grad_accum_steps, autocast)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= min(10, steps // 2):  # compile and autotuning happen in the first steps
            times.append(time.perf_counter() - start)
    step_time = statistics.median(times)
    tokens_per_sec = config.tokens_per_step / step_time
    peak = device_peak_flops(device, config.precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"{name}: {n_params / 1e6:.1f}M params ({config.n_layer}x{config.n_embd}, "
          f"T={config.block_size}, B={config.batch_size}), {config.precision}, "
          f"compile={config.compile}")  # fmt: skip
    print(f"  tokens/s: {tokens_per_sec:,.0f}   step: {step_time * 1000:.1f} ms")
    if peak is None:
        print("  MFU: unknown (device not in the peak table)")
    else:
        mfu = flops_per_token(config, n_params) * tokens_per_sec / peak
        print(f"  MFU: {100 * mfu:.1f}% of {peak / 1e12:.3g} TFLOP/s")


def gpt2_config(device: str) -> TrainConfig:
    cuda = device == "cuda"
    return TrainConfig(
        n_layer=12, n_head=12, n_embd=768, block_size=1024, batch_size=16 if cuda else 1,
        device=device, precision="bf16" if cuda else "fp32", compile=cuda, dropout=0.0,
        warmup_steps=0, max_steps=100,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120, help="steps per CPU run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--on-off", action="store_true", help="also compare separate runs")
    parser.add_argument("--gpt2", action="store_true", help="also time the GPT-2 124M shape")
    parser.add_argument("--gpt2-steps", type=int, default=50)
    args = parser.parse_args()
    bench_cpu(args.steps, args.repeats, args.on_off)
    if args.gpt2:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            print("No CUDA device: the GPT-2 124M figure below is CPU fp32, not the GPU target.")
        bench_shape(gpt2_config(device), 50304, args.gpt2_steps)
    elif not torch.cuda.is_available():
        print("No CUDA device: GPU throughput and MFU were not measured.")


if __name__ == "__main__":
    main()
