"""`make bench`: every benchmark, one after another; each prints its own figures.

Benchmarks are never part of `make test`: machines here are noisy, so they report
medians over repeats, and comparisons are ratios measured in the same run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = [
    "bench.store",
    "bench.sink",
    "bench.rules_engine",
    "bench.bench_trainer",
    "bench.tokenizer",
    "bench.ui_latency",
]


def main() -> int:
    failed = 0
    for module in BENCHMARKS:
        if not (ROOT / (module.replace(".", "/") + ".py")).exists():
            continue
        print(f"\n== {module}", flush=True)
        args = [sys.executable, "-m", module]
        if module == "bench.store" and os.environ.get("TRAINLENS_BENCH_POSTGRES_URL"):
            args += ["--postgres-url", os.environ["TRAINLENS_BENCH_POSTGRES_URL"]]
        failed |= subprocess.call(args, cwd=ROOT)
    return failed


if __name__ == "__main__":
    sys.exit(main())
