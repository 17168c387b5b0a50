"""Stopping promptly: SIGTERM is honoured between micro-batches, eval batches and sampled
tokens; the interrupted step is dropped whole and a resume runs it again, bitwise as if
the run had never stopped."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.conftest import TINY, run, tiny_config
from trainer.checkpoint import LATEST, read_checkpoint_info
from trainer.model import GPT
from trainer.timing import read_timing

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
EXIT_BOUND_SECONDS = 30  # generous: interpreter teardown alone takes seconds under load

# Three micro-batches per step, an eval (2 splits x 2 batches) and a sample every 5 steps.
CONFIG = tiny_config(
    max_steps=20, grad_accum_steps=3, eval_interval=5, sample_interval=5, checkpoint_interval=7
)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, corpus: str) -> Any:
    result, sink = run(CONFIG, corpus, tmp_path_factory.mktemp("straight"))
    assert result.status == "completed"
    return sink


def _phase(module: GPT, batch: torch.Tensor) -> str:
    if module.training:
        return "micro-batch"
    return "sample" if batch.shape[0] == 1 else "eval"


@pytest.fixture
def sigterm_at() -> Iterator[Any]:
    """sigterm_at(phase, n): SIGTERM this process at the model's n-th forward in phase."""
    handles = []

    def arm(phase: str, n: int) -> None:
        seen = {phase: 0}

        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            if isinstance(module, GPT) and _phase(module, args[0]) == phase:
                seen[phase] += 1
                if seen[phase] == n:
                    signal.raise_signal(signal.SIGTERM)  # train() turns it into a stop

        handles.append(torch.nn.modules.module.register_module_forward_pre_hook(hook))

    yield arm
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize(
    ("phase", "n", "stopped_at"),
    [
        ("micro-batch", 3 * 8 + 2, 8),  # the 2nd of step 8's three micro-batches
        ("eval", 4 * 2 + 2, 10),  # inside the third eval, at step 10
        ("sample", 50, 5),  # 50 tokens into the first sample, at step 5
    ],
)
def test_a_stop_inside_a_step_drops_it_and_resume_runs_it_again(
    tmp_path: Path, corpus: str, straight: Any, sigterm_at: Any,
    phase: str, n: int, stopped_at: int,
) -> None:  # fmt: skip
    sigterm_at(phase, n)
    first, first_sink = run(CONFIG, corpus, tmp_path)
    assert (first.status, first.step, first.reason) == ("stopped", stopped_at, "SIGTERM")
    assert [step for step, _ in first_sink.rows] == list(range(stopped_at))
    assert all(step < stopped_at for step, _ in first_sink.samples)
    assert read_checkpoint_info(tmp_path / LATEST).step == stopped_at

    second, second_sink = run(CONFIG, corpus, tmp_path, resume=True)
    assert (second.status, second.step, second.reason) == ("completed", CONFIG.max_steps, None)
    assert [step for step, _ in second_sink.rows] == list(range(stopped_at, CONFIG.max_steps))
    for key in ("train/loss", "train/grad_norm", "val/loss"):
        steps, values = straight.series(key)
        assert first_sink.series(key)[0] + second_sink.series(key)[0] == steps
        assert first_sink.series(key)[1] + second_sink.series(key)[1] == values, key


# -- a real process, under CPU contention ------------------------------------------------


@pytest.fixture
def cpu_burner() -> Iterator[None]:
    """A busy loop beside the trainer, as on a loaded machine."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


def _start(out: Path, data: Path, settings: dict[str, Any], *flags: str) -> subprocess.Popen:
    config = out.parent / f"{out.name}.json"
    config.write_text(json.dumps({**TINY, **settings}))
    command = [sys.executable, "-m", "trainer.cli", "--config", str(config), "--data", str(data)]
    return subprocess.Popen(
        [*command, "--out", str(out), "--quiet", *flags],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _rows(out: Path) -> list[dict[str, Any]]:
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]  # whole lines only


def _wait_for_rows(proc: subprocess.Popen, out: Path, count: int) -> None:
    deadline = time.monotonic() + 300
    while len(_rows(out)) < count:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the run logged too few steps"
        time.sleep(0.02)  # polling the file, not waiting a guessed time


def _sigterm(proc: subprocess.Popen, out: Path) -> str:
    """Send SIGTERM and wait for a clean exit; returns stderr."""
    sent, sent_at = time.monotonic(), time.time()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=EXIT_BOUND_SECONDS)
    exit_seconds = time.monotonic() - sent
    assert proc.returncode == 0, stderr
    checkpointed = (out / LATEST).stat().st_mtime - sent_at
    print(f"SIGTERM: checkpoint after {checkpointed:.2f} s, exit after {exit_seconds:.2f} s")
    return stderr


def _resume_and_check_continuity(out: Path, data: Path, settings: dict[str, Any]) -> None:
    stopped_at = read_checkpoint_info(out / LATEST).step
    assert [row["step"] for row in _rows(out)] == list(range(stopped_at))
    resumed = _start(out, data, settings, "--resume", "--max_steps", str(stopped_at + 3))
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    rows = _rows(out)
    assert [row["step"] for row in rows] == list(range(stopped_at + 3))  # no gap, no repeat
    assert rows[stopped_at]["metrics"]["train/resumed"] == 1.0


# Both runs are stopped just after step 2 is logged, so the SIGTERM lands at the start of
# step 3, seconds before its end. Finishing the step (or eval) in flight would log step 3
# and checkpoint step 4; dropping it logs steps 0-2 and checkpoints step 3.


def test_sigterm_mid_step_under_load_drops_the_step(
    tmp_path: Path, corpus: str, cpu_burner: None
) -> None:
    data = tmp_path / "data.txt"
    data.write_text(corpus)
    # Seconds per step from hundreds of micro-batches of a few ms each.
    slow_steps = {"grad_accum_steps": 300, "max_steps": 1000,
                  "eval_interval": 1000, "checkpoint_interval": 1000}  # fmt: skip
    proc = _start(tmp_path / "run", data, slow_steps)
    _wait_for_rows(proc, tmp_path / "run", 3)
    stderr = _sigterm(proc, tmp_path / "run")
    step_ms = statistics.median(row["metrics"]["perf/step_ms"] for row in _rows(tmp_path / "run"))
    print(f"a step takes {step_ms / 1000:.2f} s")

    assert "stopped (SIGTERM) at step 3" in stderr
    assert read_checkpoint_info(tmp_path / "run" / LATEST).step == 3
    _resume_and_check_continuity(tmp_path / "run", data, {**slow_steps, "grad_accum_steps": 1})


def test_sigterm_during_eval_under_load_drops_the_eval(
    tmp_path: Path, corpus: str, cpu_burner: None
) -> None:
    data = tmp_path / "data.txt"
    data.write_text(corpus)
    # Fast steps, and an eval of hundreds of batches before steps 0 and 3.
    slow_evals = {"eval_batches": 1000, "eval_interval": 3, "max_steps": 1000,
                  "checkpoint_interval": 1000}  # fmt: skip
    proc = _start(tmp_path / "run", data, slow_evals)
    _wait_for_rows(proc, tmp_path / "run", 3)
    stderr = _sigterm(proc, tmp_path / "run")
    print(f"an eval takes {read_timing(tmp_path / 'run')['eval_seconds']:.2f} s")

    assert "stopped (SIGTERM) at step 3" in stderr
    assert read_checkpoint_info(tmp_path / "run" / LATEST).step == 3
    _resume_and_check_continuity(tmp_path / "run", data, {**slow_evals, "eval_batches": 2})
