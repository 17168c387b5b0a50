"""`make eval-rules`: does every rule fire on its fault, how fast, and what does it
say about healthy runs?

Every scenario preset of the trainer is trained on the CPU (or read back from an
earlier `--runs-dir`), and the rule engine is replayed over its metrics as they would
have arrived, ten steps at a time. Synthetic series cover what the presets cannot show
on a CPU in a minute (a dead MLP, a stalled run). Printed per rule: whether it fired on
its scenario, the steps from the fault to the finding, and the warning or critical
findings it raised on healthy runs (the target is none).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.rules.base import SeriesView
from app.rules.episodes import Episode
from app.rules.registry import RULES
from app.rules.replay import load_metrics_jsonl, replay
from trainer.presets import list_presets, preset_config

ROOT = Path(__file__).resolve().parent.parent
FAULT_FIELDS = ("spike_step", "nan_step", "stall_step", "restart_at_step")


@dataclass
class Scenario:
    name: str
    series: dict[str, SeriesView]
    config: dict[str, Any]
    expected: list[str]
    fault_step: int
    healthy: bool
    status: str = "running"
    now: float | None = None


# -- presets -------------------------------------------------------------------------


def preset_scenarios(runs_dir: Path, only: list[str] | None) -> list[Scenario]:
    scenarios = []
    for preset in list_presets():
        if only and preset.name not in only:
            continue
        out = runs_dir / preset.name
        metrics = out / "metrics.jsonl"
        if not metrics.exists():
            started = time.perf_counter()
            print(f"training preset {preset.name} ...", end=" ", flush=True)
            command = [sys.executable, "-m", "trainer.cli", "--preset", preset.name]
            done = subprocess.run(
                [*command, "--out", str(out), "--quiet", "--device", "cpu"],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(f"preset {preset.name} failed:\n{done.stderr[-3000:]}")
            print(f"{time.perf_counter() - started:.0f} s", flush=True)
        config = preset_config(preset.name).model_dump(mode="json")
        faults = [config["faults"][field] for field in FAULT_FIELDS if config["faults"][field]]
        scenarios.append(
            Scenario(
                name=f"preset:{preset.name}",
                series=load_metrics_jsonl(metrics),
                config=config,
                expected=list(preset.expected_findings),
                fault_step=min(faults, default=0),
                healthy=preset.name == "healthy",
                status="completed",
            )
        )
    return scenarios


# -- synthetic series ----------------------------------------------------------------


def _steps(n: int, every: int = 1) -> np.ndarray:
    return np.arange(0, n * every, every)


def _view(steps: np.ndarray, values: np.ndarray) -> SeriesView:
    return SeriesView(steps.astype(np.int64), values.astype(np.float64), steps.astype(np.float64))


def _healthy_base(n: int = 1000, seed: int = 0, layers: int = 4) -> dict[str, SeriesView]:
    """A healthy GPT run's metrics: decaying loss, settling grad norm, cosine LR,
    per-layer instruments every 10 steps."""
    rng = np.random.default_rng(seed)
    steps = _steps(n)
    vocab = 65
    loss = 1.6 + (math.log(vocab) - 1.6) * np.exp(-steps / 150.0)
    loss *= 1 + 0.015 * rng.standard_normal(n)
    grad = 0.35 + 1.2 * np.exp(-steps / 80.0) + 0.03 * rng.standard_normal(n)
    warmup, peak, floor = 50, 1e-3, 1e-4
    progress = np.clip((steps - warmup) / (n - warmup), 0, 1)
    lr = np.where(
        steps < warmup,
        peak * (steps + 1) / warmup,
        floor + 0.5 * (peak - floor) * (1 + np.cos(math.pi * progress)),
    )
    series = {
        "train/loss": _view(steps, loss),
        "train/grad_norm": _view(steps, grad),
        "train/grad_clipped": _view(steps, (grad > 1.0).astype(float)),
        "train/lr": _view(steps, lr),
        "perf/tokens_per_sec": _view(steps, 50_000 * (1 + 0.03 * rng.standard_normal(n))),
        "perf/mfu": _view(steps, 0.42 * (1 + 0.03 * rng.standard_normal(n))),
        "data/vocab_size": _view(steps[:1], np.array([vocab])),
    }
    evals = _steps(n // 100, 100)
    val = 1.65 + (math.log(vocab) - 1.65) * np.exp(-evals / 150.0)
    series["val/loss"] = _view(evals, val)
    series["train/loss_eval"] = _view(evals, val - 0.05 * (evals / n))
    inst = _steps(n // 10, 10)
    m = len(inst)
    for i in range(layers):
        for part in ("mlp", "resid"):
            prefix = f"act/h{i}.{part}"
            series[f"{prefix}/std"] = _view(
                inst, (0.8 + 0.1 * i) * (1 + 0.02 * rng.standard_normal(m))
            )
            series[f"{prefix}/mean"] = _view(inst, 0.01 * rng.standard_normal(m))
            series[f"{prefix}/absmax"] = _view(inst, 4.0 + 0.2 * rng.standard_normal(m))
            series[f"{prefix}/frac_saturated"] = _view(inst, 0.002 + 0.001 * rng.random(m))
            series[f"{prefix}/frac_dead"] = _view(inst, 0.05 + 0.01 * rng.random(m))
    for layer in ["wte", "wpe", *[f"h{i}" for i in range(layers)], "ln_f"]:
        ratio = 1e-3 * (lr / peak)[inst] * (1 + 0.1 * rng.standard_normal(m))
        series[f"update/{layer}/ratio"] = _view(inst, np.maximum(ratio, 2e-4))
    return series


def _config(**overrides: Any) -> dict[str, Any]:
    base = {
        "vocab_size": 65, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 50, "max_steps": 1000,
        "schedule": "cosine", "grad_clip": 1.0,
    }  # fmt: skip
    return {**base, **overrides}


def _with(
    series: dict[str, SeriesView], key: str, change: Callable[[SeriesView], np.ndarray]
) -> dict[str, SeriesView]:
    view = series[key]
    return {**series, key: SeriesView(view.steps, change(view).astype(np.float64), view.times)}


def synthetic_scenarios() -> list[Scenario]:
    base = _healthy_base()
    fault = 500
    after = lambda view: view.steps >= fault  # noqa: E731

    def scenario(
        name: str, series: dict[str, SeriesView], expected: list[str], **kw: Any
    ) -> Scenario:
        config = kw.pop("config", _config())
        return Scenario(
            f"synthetic:{name}", series, config, expected, kw.pop("fault_step", fault), False, **kw
        )

    diverging = _with(
        base,
        "train/loss",
        lambda v: np.where(after(v), v.values * (1 + (v.steps - fault) / 40.0), v.values),
    )
    saturated = _with(
        base, "act/h1.mlp/frac_saturated", lambda v: np.where(after(v), 0.3, v.values)
    )
    dead = _with(base, "act/h2.mlp/frac_dead", lambda v: np.where(after(v), 0.7, v.values))
    collapsed = _with(base, "act/h3.mlp/std", lambda v: np.where(after(v), 1e-5, v.values))
    tiny_updates = base
    for key in [k for k in base if k.startswith("update/")]:
        tiny_updates = _with(tiny_updates, key, lambda v: np.where(after(v), 2e-6, v.values))
    clipped = _with(base, "train/grad_clipped", lambda v: np.where(after(v), 1.0, v.values))
    clipped = _with(clipped, "train/grad_norm", lambda v: np.where(after(v), 3.0, v.values))
    flat_lr = _with(base, "train/lr", lambda v: np.where(v.steps >= 50, 1e-3, v.values))
    slow = _with(
        base,
        "perf/tokens_per_sec",
        lambda v: np.where(after(v) & (v.steps < fault + 100), v.values / 5, v.values),
    )
    slow = _with(
        slow,
        "perf/mfu",
        lambda v: np.where(after(v) & (v.steps < fault + 100), v.values / 5, v.values),
    )
    stalled = {key: view.upto(fault) for key, view in base.items()}
    last_time = float(stalled["train/loss"].times[-1])
    return [
        Scenario("synthetic:healthy", base, _config(), [], 0, True),
        Scenario("synthetic:healthy-seed1", _healthy_base(seed=1), _config(), [], 0, True),
        scenario("divergence", diverging, ["divergence"]),
        scenario("saturation", saturated, ["activation_saturation"]),
        scenario("dead_mlp", dead, ["dead_units"]),
        scenario("collapsed_std", collapsed, ["activation_scale"]),
        scenario("tiny_updates", tiny_updates, ["update_ratio"]),
        scenario("clip_saturation", clipped, ["clip_saturation"]),
        scenario("cosine_not_decaying", flat_lr, ["lr_schedule"], fault_step=50),
        scenario("loader_stall", slow, ["throughput_drop", "low_mfu"]),
        scenario("stalled", stalled, ["stalled"], now=last_time + 3600.0),
    ]


# -- report --------------------------------------------------------------------------


def evaluate(scenarios: list[Scenario]) -> tuple[dict[str, list[Episode]], float]:
    results = {}
    started = time.perf_counter()
    for scenario in scenarios:
        results[scenario.name] = replay(
            RULES,
            scenario.series,
            scenario.config,
            every=10,
            status=scenario.status,
            now=scenario.now,
        )
    return results, time.perf_counter() - started


def report(scenarios: list[Scenario], results: dict[str, list[Episode]], seconds: float) -> bool:
    print("\nPer scenario (expected codes; what fired, first step, severity):")
    for scenario in scenarios:
        fired = results[scenario.name]
        shown = ", ".join(f"{e.code}@{e.first_step}({e.severity[0]})" for e in fired) or "-"
        print(f"  {scenario.name:36s} expects {','.join(scenario.expected) or '-':38s} {shown}")

    print("\n| rule | scenario | fired | steps fault->finding | false findings on healthy runs |")
    print("|---|---|---|---|---|")
    healthy = [s for s in scenarios if s.healthy]
    all_ok = True
    for rule in RULES:
        false = [
            f"{s.name}:{e.first_step}({e.severity})"
            for s in healthy
            for e in results[s.name]
            if e.code == rule.code and e.severity != "info"
        ]
        mine = [s for s in scenarios if rule.code in s.expected]
        if not mine:
            print(f"| {rule.code} | (none) | - | - | {len(false)} {' '.join(false)} |")
            continue
        for scenario in mine:
            hits = [e for e in results[scenario.name] if e.code == rule.code]
            # The first finding at or after the fault (a preset may show the rule earlier too).
            after = [e for e in hits if e.first_step >= scenario.fault_step] or hits
            delay = after[0].first_step - scenario.fault_step if hits else None
            all_ok &= bool(hits)
            print(
                f"| {rule.code} | {scenario.name} | {'yes' if hits else 'NO'} | "
                f"{'-' if delay is None else delay} | {len(false)} {' '.join(false)} |"
            )
        all_ok &= not false
    points = sum(len(v) for s in scenarios for v in s.series.values())
    print(f"\nreplayed {len(scenarios)} scenarios ({points:,} points) in {seconds:.1f} s")
    print(
        "RESULT:",
        "every rule fired on its scenario; healthy runs clean" if all_ok else "MISSES above",
    )
    return all_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "var" / "eval-rules")
    parser.add_argument("--presets", nargs="*", help="only these presets (default: all)")
    parser.add_argument("--no-presets", action="store_true", help="synthetic series only")
    args = parser.parse_args()
    scenarios = [] if args.no_presets else preset_scenarios(args.runs_dir, args.presets)
    scenarios += synthetic_scenarios()
    results, seconds = evaluate(scenarios)
    return 0 if report(scenarios, results, seconds) else 1


if __name__ == "__main__":
    sys.exit(main())
