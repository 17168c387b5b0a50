"""TrainConfig validation, presets as data, and the torch-free import contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.rules.registry import RULES_BY_CODE
from trainer.config import TrainConfig
from trainer.presets import PRESETS, list_presets, preset_config

REPO = Path(__file__).resolve().parents[2]

RULE_CODES = set(RULES_BY_CODE)


def test_defaults_are_valid_and_small() -> None:
    config = TrainConfig()
    assert config.n_embd % config.n_head == 0
    assert config.tokens_per_step == config.batch_size * config.block_size
    assert config.dataset == "stdlib"
    assert config.actions.stop_on_nonfinite and not config.actions.skip_loss_spikes
    assert config.faults.nan_step is None and not config.faults.leak_val


def test_tokens_per_step_counts_accumulation_and_processes() -> None:
    config = TrainConfig(batch_size=8, block_size=64, grad_accum_steps=4, nproc=2)
    assert config.tokens_per_step == 8 * 64 * 4 * 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"n_embd": 100, "n_head": 3}, "n_embd (100) must be divisible by n_head (3)"),
        ({"lr": 1e-4, "min_lr": 1e-3}, "min_lr (0.001) must not exceed lr (0.0001)"),
        ({"warmup_steps": 100, "max_steps": 100}, "warmup_steps (100) must be < max_steps (100)"),
        ({"faults": {"nan_step": 700}, "max_steps": 600}, "faults.nan_step (700) must be <"),
        ({"faults": {"fp16_no_scaler": True}}, "faults.fp16_no_scaler requires precision"),
        ({"faults": {"stall_step": 5}}, "faults.stall_step needs faults.stall_steps"),
    ],
)
def test_bad_combinations_name_the_field(settings: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate(settings)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_layer", 0),
        ("dropout", 1.0),
        ("lr", -1.0),
        ("val_fraction", 0.9),
        ("schedule", "exponential"),
        ("precision", "fp8"),
        ("tokenizer", "gpt2"),
        ("device", "tpu"),
        ("nproc", 0),
    ],
)
def test_field_constraints_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate({field: value})
    errors = info.value.errors()
    assert [error["loc"] for error in errors] == [(field,)]


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="n_layers"):
        TrainConfig.model_validate({"n_layers": 4})
    with pytest.raises(ValidationError, match="nan_at"):
        TrainConfig.model_validate({"faults": {"nan_at": 4}})


def test_config_round_trips_through_json() -> None:
    config = TrainConfig(rules={"loss_spike": {"zscore": 8}}, faults={"spike_step": 10})
    again = TrainConfig.model_validate_json(config.model_dump_json())
    assert again == config


def test_config_presets_corpus_import_without_torch() -> None:
    code = (
        "import sys, trainer.config, trainer.presets, trainer.corpus, trainer.stats, "
        "trainer.sink\n"
        "trainer.presets.preset_config('nan')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_every_preset_is_valid_data() -> None:
    presets = list_presets()
    names = [p.name for p in presets]
    assert names == [
        "healthy", "lr_too_high", "no_warmup", "lr_too_low", "bad_init", "overfit",
        "leaky_val", "loss_spike", "nan", "fp16_no_scaler", "slow_data",
        "resume_without_optimizer", "lr_finder",
    ]  # fmt: skip
    for preset in presets:
        assert preset.title and preset.description
        assert set(preset.expected_findings) <= RULE_CODES, preset.name
        # fp16_no_scaler's CPU-scale symptom (exact-zero gradients) has no rule code yet.
        silent = preset.name in ("healthy", "fp16_no_scaler", "lr_finder")
        assert (preset.expected_findings == []) == silent, preset.name
        preset_config(preset.name)  # validates
    assert PRESETS["healthy"].overrides == {}


def test_preset_config_merges_overrides_and_rejects_unknown_names() -> None:
    config = preset_config("nan", {"max_steps": 200, "faults": {"spike_step": 5}})
    assert config.max_steps == 200
    assert config.faults.nan_step == PRESETS["nan"].overrides["faults"]["nan_step"]
    assert config.faults.spike_step == 5
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        preset_config("nope")


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("n_layer", 256), ("n_head", 256), ("n_embd", 32_768), ("block_size", 131_072),
        ("batch_size", 65_536), ("grad_accum_steps", 4_096), ("max_steps", 10_000_000),
        ("eval_batches", 10_000), ("eval_interval", 10_000_000), ("nproc", 1_024),
        ("seed", 2**32 - 1),
    ],
)  # fmt: skip
def test_size_fields_are_bounded_naming_the_field_and_limit(field: str, limit: int) -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig(**{field: limit + 1})
    (error,) = info.value.errors()
    assert error["loc"] == (field,) and f"{limit}" in error["msg"]


def test_vocab_size_belongs_to_bpe() -> None:
    assert TrainConfig(tokenizer="bpe").vocab_size == 4096
    assert TrainConfig(tokenizer="bpe", vocab_size=512).vocab_size == 512
    for bad in (511, 50_258):
        with pytest.raises(ValidationError, match="vocab_size"):
            TrainConfig(tokenizer="bpe", vocab_size=bad)
    with pytest.raises(ValidationError, match="applies to tokenizer 'bpe' only"):
        TrainConfig(tokenizer="char", vocab_size=1024)
