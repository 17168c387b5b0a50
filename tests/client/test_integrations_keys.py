"""Other tools' metric names to canonical keys: one table for every integration."""

from __future__ import annotations

from trainlens.integrations.keys import KeyMapper, safe_name
from trainlens.wire import metric_name_error


def test_common_names_become_canonical_keys_and_the_rest_stay() -> None:
    keys = KeyMapper()
    assert keys.key("train_loss") == "train/loss"
    assert keys.key("val_loss") == "val/loss"
    assert keys.key("lr-AdamW") == "train/lr"
    assert keys.key("grad_norm") == "train/grad_norm"
    assert keys.key("epoch") == "epoch" and keys.key("custom/thing") == "custom/thing"
    # LearningRateMonitor with several parameter groups: pg1 is the first group
    assert keys.key("lr-SGD/pg1") == "train/lr/group0"
    assert keys.key("lr-SGD/pg2") == "train/lr/group1"


def test_two_aliases_of_one_key_never_write_over_each_other() -> None:
    keys = KeyMapper()
    assert keys.key("loss") == "train/loss"
    assert keys.key("train_loss") == "train_loss"  # "loss" came first and keeps the key
    assert keys.key("loss") == "train/loss"  # sticky across calls

    primed = KeyMapper()
    primed.prime(["loss", "train/loss", "learning_rate", "lr"])
    # the canonical name itself wins, then the most specific alias
    assert primed.key("train/loss") == "train/loss" and primed.key("loss") == "loss"
    assert primed.key("learning_rate") == "train/lr" and primed.key("lr") == "lr"


def test_names_the_server_refuses_are_repaired_not_dropped() -> None:
    assert safe_name("eval acc") == "eval_acc"
    assert safe_name("a, b") == "a_b"
    assert metric_name_error(safe_name("x" * 300)) is None
    assert safe_name("fine/name") == "fine/name"
