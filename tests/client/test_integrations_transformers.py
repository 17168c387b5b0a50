"""The Hugging Face callback, against the real `transformers.Trainer` on CPU: a tiny GPT-2
built from its config (no hub download) trains a few steps and logs to a live server."""

from __future__ import annotations

import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers loads: nothing fetched

import torch  # noqa: E402
import transformers  # noqa: E402

from tests.client.conftest import run_detail, series  # noqa: E402
from trainlens.integrations.transformers import TrainlensCallback  # noqa: E402

VOCAB = 64
SEQ = 16


def _dataset(n: int, seed: int) -> list[dict[str, object]]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, SEQ), generator=generator)
    return [{"input_ids": row, "labels": row} for row in ids]


def _trainer(output_dir: Path, callback: TrainlensCallback) -> transformers.Trainer:
    config = transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=SEQ
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    args = transformers.TrainingArguments(
        output_dir=str(output_dir),
        run_name="hf-tiny",
        max_steps=6,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-3,
        warmup_steps=2,
        lr_scheduler_type="cosine",
        max_grad_norm=0.5,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return transformers.Trainer(
        model=model,
        args=args,
        train_dataset=_dataset(24, seed=1),
        eval_dataset=_dataset(8, seed=2),
        callbacks=[callback],
    )


def test_a_trainer_run_arrives_with_canonical_keys_and_the_config_the_rules_read(
    live_server, tmp_path: Path
) -> None:
    callback = TrainlensCallback(url=live_server.url, offline_dir=str(tmp_path / "journal"))
    trainer = _trainer(tmp_path / "out", callback)
    trainer.train()

    history = trainer.state.log_history
    train_logs = [entry for entry in history if "loss" in entry]
    eval_logs = [entry for entry in history if "eval_loss" in entry]
    assert len(train_logs) == 6 and len(eval_logs) == 2
    run_id = callback.run_id
    assert run_id is not None and callback.run is None  # finished at train end

    detail = run_detail(live_server, run_id)
    assert detail["status"] == "completed" and detail["name"] == "hf-tiny"
    config = detail["config"]
    assert config["vocab_size"] == VOCAB
    assert config["lr"] == 1e-3 and config["max_steps"] == 6 and config["warmup_steps"] == 2
    assert config["grad_clip"] == 0.5
    assert config["schedule"] == "cosine" and config["min_lr"] == 0.0
    assert config["training_args"]["per_device_train_batch_size"] == 4
    assert config["model"]["n_embd"] == 32

    # every logged value, exactly, at the Trainer's global step
    for key, name, logs in (
        ("train/loss", "loss", train_logs),
        ("train/grad_norm", "grad_norm", train_logs),
        ("train/lr", "learning_rate", train_logs),
        ("val/loss", "eval_loss", eval_logs),
        ("val/runtime", "eval_runtime", eval_logs),
    ):
        steps, values = series(live_server, run_id, key)
        assert steps == [entry["step"] for entry in logs], key
        assert values == [float(entry[name]) for entry in logs], key
    assert series(live_server, run_id, "epoch")[0] == list(range(1, 7))
    # the warmup shows in the logged LR (the rate each step used): the rules see it applied
    lrs = series(live_server, run_id, "train/lr")[1]
    assert lrs[0] < lrs[1] < lrs[2] and math.isclose(lrs[2], 1e-3) and lrs[5] < lrs[2]
    # the end-of-training summary is not a point of any series
    keys = set(detail["keys"])
    assert not keys & {"train_loss", "train/train_loss", "train_runtime", "loss", "eval_loss"}
    assert {"train/loss", "train/grad_norm", "train/lr", "val/loss"} <= keys


def test_only_the_main_process_opens_a_run() -> None:
    callback = TrainlensCallback(url="http://127.0.0.1:9")  # nothing listens there
    args = transformers.TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    state = transformers.TrainerState(is_world_process_zero=False)
    control = transformers.TrainerControl()
    callback.on_train_begin(args, state, control)
    callback.on_log(args, state, control, logs={"loss": 1.0})
    callback.on_train_end(args, state, control)
    assert callback.run is None and callback.run_id is None
