"""Model init, the LR schedule, gradient accumulation, decay groups, eval mode."""

from __future__ import annotations

import math
import random

import pytest
import torch

from tests.trainer.conftest import SHAKESPEARE, tiny_config
from trainer.config import TrainConfig
from trainer.data import make_splits, random_windows
from trainer.model import GPT, build_model, build_optimizer, param_groups
from trainer.schedule import config_lr, lr_at
from trainer.steps import estimate_loss, forward_backward
from trainer.tokenizer import CharTokenizer, build_tokenizer

NO_AUTOCAST = torch.autocast("cpu", enabled=False)


def _sixty_five_symbol_text() -> str:
    if SHAKESPEARE.exists():
        return SHAKESPEARE.read_text(encoding="utf-8")
    # Without ../shared: 65 distinct symbols, uniformly mixed.
    symbols = [chr(c) for c in range(48, 48 + 65)]
    rng = random.Random(0)
    return "".join(rng.choice(symbols) for _ in range(200_000))


def test_fresh_char_model_starts_near_ln_vocab() -> None:
    text = _sixty_five_symbol_text()
    tokenizer = CharTokenizer.from_text(text)
    assert tokenizer.vocab_size == 65
    data = torch.tensor(tokenizer.encode(text[:100_000]))
    config = TrainConfig()
    model = build_model(config, tokenizer.vocab_size)
    generator = torch.Generator().manual_seed(0)
    batches = [random_windows(data, 16, config.block_size, generator) for _ in range(4)]
    loss = estimate_loss(model, batches, NO_AUTOCAST).item()
    assert abs(loss - math.log(65)) < 0.3, loss


def test_init_follows_gpt2_and_ties_the_head() -> None:
    config = TrainConfig(n_layer=8, n_embd=256, n_head=8)
    model = build_model(config, 100)
    assert model.lm_head.weight is model.transformer.wte.weight
    proj = torch.cat([b.mlp.c_proj.weight.flatten() for b in model.transformer.h])
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert fc.std().item() == pytest.approx(0.02, rel=0.05)
    same = build_model(config, 100)
    assert torch.equal(model.transformer.wte.weight, same.transformer.wte.weight)


@pytest.mark.parametrize(("step", "expected"), [(500, 8.95e-4), (1000, 5.41e-4), (1500, 1.61e-4)])
def test_cosine_schedule_published_values(step: int, expected: float) -> None:
    assert lr_at(step, 1e-3, 0.0, 100, 2000, "cosine") == pytest.approx(expected, rel=0.01)


def test_schedule_shapes() -> None:
    assert lr_at(0, 1e-3, 0.0, 100, 2000) == pytest.approx(1e-5)  # (t + 1) / warmup
    assert lr_at(99, 1e-3, 0.0, 100, 2000) == pytest.approx(1e-3)
    assert lr_at(100, 1e-3, 1e-4, 100, 2000) == pytest.approx(1e-3)
    assert lr_at(1999, 1e-3, 1e-4, 100, 2000) == pytest.approx(1e-4, rel=1e-3)
    assert lr_at(1000, 1e-3, 1e-4, 100, 2000, "constant") == 1e-3
    assert lr_at(1050, 1e-3, 1e-4, 100, 2000, "linear") == pytest.approx(5.5e-4)
    assert lr_at(0, 1e-3, 0.0, 0, 2000) == 1e-3  # no warmup: full LR at once
    config = TrainConfig(lr=3e-3, min_lr=3e-4, warmup_steps=10, max_steps=100)
    assert config_lr(config, 4) == pytest.approx(1.5e-3)


def _grads(model: GPT) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_four_accumulated_micro_batches_equal_one_batch_of_64() -> None:
    config = tiny_config(dropout=0.0)
    data = torch.randint(0, 50, (5000,), generator=torch.Generator().manual_seed(1))
    x, y = random_windows(data, 64, config.block_size, torch.Generator().manual_seed(2))

    big = build_model(config, 50)
    loss_big, _ = forward_backward(big, iter([(x, y)]).__next__, 1, NO_AUTOCAST)
    small = build_model(config, 50)
    chunks = iter(zip(x.split(16), y.split(16), strict=True))
    loss_acc, _ = forward_backward(small, chunks.__next__, 4, NO_AUTOCAST)

    assert loss_acc.item() == pytest.approx(loss_big.item(), abs=1e-6)
    for g_big, g_acc in zip(_grads(big), _grads(small), strict=True):
        torch.testing.assert_close(g_acc, g_big, rtol=1e-5, atol=1e-7)


def test_weight_decay_only_on_matrices() -> None:
    config = tiny_config(bias=True, weight_decay=0.1)
    model = build_model(config, 40)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decayed.isdisjoint(kept)
    assert decayed | kept == set(names.values())  # every parameter, the tied one once
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])
    assert "transformer.wte.weight" in decayed and "transformer.h.0.attn.c_attn.weight" in decayed
    assert "transformer.h.0.ln_1.weight" in kept and "transformer.h.0.attn.c_attn.bias" in kept
    optimizer = build_optimizer(model, config, "cpu")
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    assert not optimizer.defaults["fused"]


def test_evaluation_runs_in_eval_mode_without_grad_and_restores_train() -> None:
    config = tiny_config(dropout=0.5)
    model = build_model(config, 30)
    seen: list[tuple[bool, bool]] = []
    model.register_forward_pre_hook(
        lambda module, args: seen.append((module.training, torch.is_grad_enabled()))
    )
    data = torch.randint(0, 30, (2000,), generator=torch.Generator().manual_seed(0))
    batches = [random_windows(data, 4, config.block_size, torch.Generator().manual_seed(3))]
    model.train()
    first = estimate_loss(model, batches, NO_AUTOCAST)
    second = estimate_loss(model, batches, NO_AUTOCAST)
    assert seen == [(False, False), (False, False)]
    assert model.training and all(m.training for m in model.modules())
    assert first.item() == second.item()  # dropout was off
    x, y = batches[0]
    noisy = [model(x, y)[1].item() for _ in range(2)]
    assert noisy[0] != noisy[1]  # back in train mode, dropout is on again


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="needs ../shared/data/tinyshakespeare.txt")
def test_tiny_shakespeare_split_matches_the_published_figures() -> None:
    text = SHAKESPEARE.read_text(encoding="utf-8")
    config = TrainConfig()
    tokenizer = build_tokenizer("char", text)
    splits = make_splits(config, text, tokenizer)
    assert tokenizer.vocab_size == 65
    assert (len(splits.train), len(splits.val)) == (1_003_854, 111_540)
    assert tokenizer.decode(splits.val[:20].tolist()) == text[1_003_854 : 1_003_854 + 20]
