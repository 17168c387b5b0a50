"""A small char-level GPT training loop written the way people write their own scripts
(nanoGPT's train.py, shrunk for a CPU): its own model, AdamW, linear warmup then
cosine decay, the loss estimated at the top of an eval step, the pre-clip gradient
norm from clip_grad_norm_, everything logged through the client over HTTP.

It shares nothing with our trainer but the corpus text, so the rule engine meets the
series a stranger's script produces. `Recipe` holds the knobs and the faults a test
injects: a bad batch, a real NaN in a weight, a too-large output init, a stall.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import trainlens


@dataclass
class Recipe:
    seed: int = 0
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 20
    max_steps: int = 200
    eval_interval: int = 25
    eval_iters: int = 4
    grad_clip: float = 1.0
    weight_decay: float = 0.1
    beta2: float = 0.95
    batch_size: int = 16
    block_size: int = 32
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 48
    dropout: float = 0.0
    corpus_chars: int = 60_000  # a tiny corpus overfits
    # faults
    bad_batch_at: int | None = None  # a batch of random tokens at this step
    nan_weight_at: int | None = None  # a NaN written into a weight before this step
    output_scale: float = 1.0  # the LM head's init multiplied by this
    stall_at: int | None = None  # the script hangs this long before this step
    stall_seconds: float = 0.0
    rules: dict[str, Any] = field(default_factory=dict)  # per-run rule overrides
    client: dict[str, Any] = field(default_factory=dict)  # trainlens.init options


class Block(nn.Module):
    def __init__(self, r: Recipe) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(r.n_embd)
        self.attn = nn.MultiheadAttention(r.n_embd, r.n_head, dropout=r.dropout, batch_first=True)
        self.ln_2 = nn.LayerNorm(r.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(r.n_embd, 4 * r.n_embd), nn.GELU(), nn.Linear(4 * r.n_embd, r.n_embd)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    def __init__(self, r: Recipe, vocab_size: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, r.n_embd)
        self.wpe = nn.Embedding(r.block_size, r.n_embd)
        self.blocks = nn.ModuleList(Block(r) for _ in range(r.n_layer))
        self.ln_f = nn.LayerNorm(r.n_embd)
        self.head = nn.Linear(r.n_embd, vocab_size, bias=False)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        mask = torch.triu(torch.ones(r.block_size, r.block_size, dtype=torch.bool), 1)
        self.register_buffer("mask", mask)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t))
        for block in self.blocks:
            x = block(x, self.mask[:t, :t])
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def train(url: str, name: str, r: Recipe, text: str) -> int:
    """Train per the recipe, logging to the server at `url`; returns the run id."""
    # One thread: a tiny model gains nothing from more, and on a busy CI machine the
    # thread pool's contention costs 20x.
    torch.set_num_threads(1)
    torch.manual_seed(r.seed)
    text = text[: r.corpus_chars]
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))
    splits = {"train": data[:n], "val": data[n:]}
    generator = torch.Generator().manual_seed(r.seed)

    def get_batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        d = splits[split]
        ix = torch.randint(len(d) - r.block_size - 1, (r.batch_size,), generator=generator)
        x = torch.stack([d[i : i + r.block_size] for i in ix])
        y = torch.stack([d[i + 1 : i + 1 + r.block_size] for i in ix])
        return x, y

    model = TinyGPT(r, len(chars))
    with torch.no_grad():
        model.head.weight.mul_(r.output_scale)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": r.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups,
        lr=r.lr,
        betas=(0.9, r.beta2),
    )

    def get_lr(it: int) -> float:
        if it < r.warmup_steps:
            return r.lr * (it + 1) / (r.warmup_steps + 1)
        progress = (it - r.warmup_steps) / max(1, r.max_steps - r.warmup_steps)
        return r.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (r.lr - r.min_lr)

    @torch.no_grad()
    def estimate_loss() -> float:
        model.eval()
        losses = [float(model(*get_batch("val"))) for _ in range(r.eval_iters)]
        model.train()
        return sum(losses) / len(losses)

    config = {
        "lr": r.lr, "min_lr": r.min_lr, "warmup_steps": r.warmup_steps,
        "max_steps": r.max_steps, "grad_clip": r.grad_clip, "vocab_size": len(chars),
        "weight_decay": r.weight_decay, "beta2": r.beta2, "schedule": "cosine",
        "batch_size": r.batch_size, "block_size": r.block_size, "rules": r.rules,
    }  # fmt: skip
    run = trainlens.init(name=name, config=config, url=url, **r.client)
    for it in range(r.max_steps):
        if it == r.stall_at:
            time.sleep(r.stall_seconds)  # a hung data loader, a full disk, ...
        if it == r.nan_weight_at:
            with torch.no_grad():
                model.blocks[0].mlp[0].weight[0, 0] = float("nan")
        lr = get_lr(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if it % r.eval_interval == 0 or it == r.max_steps - 1:
            run.log({"val/loss": estimate_loss()}, step=it)  # eval at the top of the step
        x, y = get_batch("train")
        if it == r.bad_batch_at:
            x = torch.randint(len(chars), x.shape, generator=generator)
            y = torch.randint(len(chars), y.shape, generator=generator)
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip or math.inf)
        optimizer.step()
        run.log(
            {"train/loss": loss.item(), "train/grad_norm": float(norm), "train/lr": lr},
            step=it,
        )
    run.finish()
    assert run.id is not None, "the run went offline"
    return run.id
