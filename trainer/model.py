"""A GPT language model, built from small blocks upward.

Pre-norm transformer: token + position embeddings, blocks of
LayerNorm -> causal self-attention and LayerNorm -> MLP (GELU), a final LayerNorm and an
LM head tied to the token embedding. When asked, the forward pass also returns
activation statistics computed on the device, so instruments cost no extra pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from trainer.config import TrainConfig
from trainer.faults import Faults

# |pre-activation| above this is outside GELU's curved region: below -3 it is flat at
# ~0 (no gradient), above +3 it is the identity. Counted as saturated.
SATURATION_THRESHOLD = 3.0
MLP_STATS = ("mean", "std", "absmax", "frac_saturated", "frac_dead")
RESID_STATS = ("mean", "std", "absmax")


def mlp_stats(h: torch.Tensor) -> torch.Tensor:
    """Statistics of the MLP pre-activation h (B, T, 4C), as a (5,) float32 tensor."""
    h = h.detach().float()
    alive = (h > 0).flatten(0, 1).any(dim=0)  # (4C,) unit was positive somewhere
    return torch.stack(
        (
            h.mean(),
            h.std(),
            h.abs().amax(),
            (h.abs() > SATURATION_THRESHOLD).float().mean(),
            1.0 - alive.float().mean(),
        )
    )


def resid_stats(x: torch.Tensor) -> torch.Tensor:
    """Mean, std and max |x| of the residual stream x (B, T, C), as a (3,) tensor."""
    x = x.detach().float()
    return torch.stack((x.mean(), x.std(), x.abs().amax()))


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's cannot drop only the bias)."""

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.c_fc(x)  # (B, T, 4C) pre-activation
        stats = mlp_stats(h) if collect else None
        return self.dropout(self.c_proj(self.gelu(h))), stats


class Block(nn.Module):
    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = x + self.attn(self.ln_1(x))
        mlp_out, stats = self.mlp(self.ln_2(x), collect)
        x = x + mlp_out
        if collect:
            stats = torch.cat((stats, resid_stats(x)))  # (8,)
        return x, stats


class GPT(nn.Module):
    def __init__(self, config: TrainConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.grad_checkpointing = config.grad_checkpointing
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, vocab_size, bias=False)
        # Weight tying: one matrix embeds tokens and scores them.
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # Residual output projections are scaled so the residual stream's variance does
        # not grow with depth (GPT-2).
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        Faults(config.faults).init_output_layer(self.lm_head.weight)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings excluded by default (no matmul FLOPs)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, collect_stats: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Logits, mean cross-entropy (if targets) and (n_layer, 8) activation stats."""
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        x = self.transformer.drop(tok_emb + self.transformer.wpe(pos))  # (B, T, C)
        per_block = []
        for block in self.transformer.h:
            if self.grad_checkpointing and self.training:
                x, stats = checkpoint(block, x, collect_stats, use_reentrant=False)
            else:
                x, stats = block(x, collect_stats)
            per_block.append(stats)
        x = self.transformer.ln_f(x)
        stats = torch.stack(per_block) if collect_stats else None  # (n_layer, 8)
        if targets is None:
            logits = self.lm_head(x[:, [-1], :])  # (B, 1, vocab) only the last position
            return logits, None, stats
        logits = self.lm_head(x)  # (B, T, vocab)
        flat_logits = logits.view(-1, logits.size(-1)).float()  # (B*T, vocab)
        loss = F.cross_entropy(flat_logits, targets.reshape(-1))  # targets (B*T,)
        return logits, loss, stats

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample max_new_tokens continuations of idx (B, T); returns (B, T + new)."""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.block_size :]  # (B, <=block_size)
            logits, _, _ = self(idx_cond)
            probs = F.softmax(logits[:, -1, :].float() / temperature, dim=-1)  # (B, vocab)
            next_id = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, next_id), dim=1)  # (B, T + 1)
        return idx


def build_model(config: TrainConfig, vocab_size: int) -> GPT:
    """A freshly initialised model; the same seed always gives the same weights."""
    torch.manual_seed(config.seed)
    return GPT(config, vocab_size)


def layer_names(n_layer: int) -> list[str]:
    """Parameter groups for per-layer grad/param/update norms, in depth order."""
    return ["wte", "wpe", *(f"h{i}" for i in range(n_layer)), "ln_f"]


def layer_of(param_name: str) -> str:
    """Map a parameter name (without DDP/compile prefixes) to its layer group."""
    parts = param_name.split(".")
    if parts[0] == "lm_head":
        return "wte"  # tied to the token embedding
    if parts[1] == "h":
        return f"h{parts[2]}"
    return parts[1]


# -- the optimizer: AdamW with weight decay on matrices only --------------------------


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: dim >= 2 (matmul weights, embeddings) decay; biases and norms do not.

    Decaying gains and biases only pulls them toward zero, which hurts and regularises
    nothing. Tied parameters appear once (named_parameters deduplicates them).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: TrainConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW; the fused CUDA kernel when on CUDA (one launch for all parameters)."""
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay),
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        fused=device_type == "cuda",
    )
