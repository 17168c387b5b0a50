"""The Lightning logger, against the real `lightning.pytorch.Trainer` on CPU: a tiny
language model trains a few steps and logs to a live server."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from tests.client.conftest import run_detail, series
from trainlens.integrations.lightning import TrainlensLogger

VOCAB = 32
SEQ = 8


class TinyLM(pl.LightningModule):
    def __init__(self, lr: float = 3e-3, vocab_size: int = VOCAB, fail_at: int = -1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = torch.nn.Embedding(vocab_size, 16)
        self.head = torch.nn.Linear(16, vocab_size)
        self.losses: list[float] = []  # what the module logged, to compare with the server
        self.val_losses: list[float] = []

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.embed(batch[:, :-1]))  # (B, T-1, vocab)
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)
        )

    def training_step(self, batch: torch.Tensor, index: int) -> torch.Tensor:
        if self.global_step == self.hparams.fail_at:
            raise RuntimeError("a bug in the training step")
        loss = self._loss(batch)
        self.log("train_loss", loss)
        self.losses.append(float(loss.detach()))
        return loss

    def validation_step(self, batch: torch.Tensor, index: int) -> None:
        loss = self._loss(batch)
        self.log("val_loss", loss)
        self.val_losses.append(float(loss))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def _loader(seed: int) -> torch.utils.data.DataLoader:
    data = torch.randint(0, VOCAB, (64, SEQ), generator=torch.Generator().manual_seed(seed))
    return torch.utils.data.DataLoader(data, batch_size=8)


def _fit(module: TinyLM, logger: TrainlensLogger, tmp_path: Path) -> None:
    trainer = pl.Trainer(
        max_steps=8,
        accelerator="cpu",
        logger=logger,
        callbacks=[pl.callbacks.LearningRateMonitor(logging_interval="step")],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        val_check_interval=4,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, _loader(1), _loader(2))


def test_a_lightning_run_arrives_with_canonical_keys_and_its_hyperparameters(
    live_server, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    module = TinyLM()
    logger = TrainlensLogger(
        name="pl-tiny",
        config={"max_steps": 8},
        url=live_server.url,
        offline_dir=str(tmp_path / "journal"),
    )
    _fit(module, logger, tmp_path)

    run_id = logger.run_id
    assert run_id is not None and logger.experiment is None  # finalized
    detail = run_detail(live_server, run_id)
    assert detail["status"] == "completed" and detail["name"] == "pl-tiny"
    config = detail["config"]
    assert config["lr"] == 3e-3 and config["vocab_size"] == VOCAB and config["max_steps"] == 8
    assert config["framework"] == "lightning"

    steps, losses = series(live_server, run_id, "train/loss")
    assert steps == list(range(8)) and losses == module.losses
    val_steps, val_losses = series(live_server, run_id, "val/loss")
    assert len(val_steps) == 2 and val_losses == module.val_losses
    lr_steps, lrs = series(live_server, run_id, "train/lr")  # LearningRateMonitor's lr-AdamW
    assert lr_steps == steps and lrs == [3e-3] * 8
    assert "epoch" in detail["keys"]
    assert not {"train_loss", "val_loss", "lr-AdamW"} & set(detail["keys"])


def test_an_exception_in_training_ends_the_run_failed_with_its_rows(
    live_server, tmp_path: Path
) -> None:
    module = TinyLM(fail_at=3)
    logger = TrainlensLogger(
        name="pl-crash", url=live_server.url, offline_dir=str(tmp_path / "journal")
    )
    with pytest.raises(RuntimeError, match="a bug in the training step"):
        _fit(module, logger, tmp_path)

    run_id = logger.run_id
    assert run_id is not None
    assert run_detail(live_server, run_id)["status"] == "failed"
    steps, losses = series(live_server, run_id, "train/loss")
    assert steps == [0, 1, 2] and losses == module.losses
