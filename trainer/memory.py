"""The memory budget of a run, before it starts: plain arithmetic on the config.

Torch-free, so the API can refuse a launch that cannot fit without loading torch. The
breakdown follows the production-loop lesson's budget, for this trainer's GPT (pre-norm
blocks, tied LM head, AdamW, optional autocast and gradient checkpointing):

- weights: every parameter in fp32. Under bf16/fp16 autocast the fp32 weights are the
  master copy and autocast keeps a 2-byte working copy of each during the forward
  (`autocast_weights`); there is no separate master term.
- gradients: fp32, one per parameter.
- optimizer: AdamW's two moments (exp_avg, exp_avg_sq), fp32.
- activations: what one micro-batch's forward keeps for backward, plus the head's
  backward transients; with gradient checkpointing only each block's input is kept and
  one block is recomputed at a time.
- update_snapshot: the instruments copy every weight before the optimizer step (the
  update ratio) on instrumented steps.
- ddp_buckets: DDP's gradient buckets, a second gradient copy, when nproc > 1.
- batches: the micro-batch and the fixed evaluation windows, int64 token ids.

`total_bytes` is the sum of every byte term (all but `parameters`, a count).
Per process: under DDP every rank holds all of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from trainer.config import TrainConfig

# Device memory of known GPUs in GB (decimal, as datasheets give it): (substrings that
# must all appear in the name, GB). More specific names first.
GPU_MEMORY_GB: list[tuple[tuple[str, ...], float]] = [
    (("GH200",), 96.0),
    (("H200",), 141.0),
    (("H100", "NVL"), 94.0),
    (("H100",), 80.0),
    (("B200",), 192.0),
    (("A100", "40GB"), 40.0),
    (("A100",), 80.0),
    (("L40S",), 48.0),
    (("A10G",), 24.0),
    (("A10",), 24.0),
    (("L40",), 48.0),
    (("L4",), 24.0),
    (("V100", "16GB"), 16.0),
    (("V100",), 32.0),
    (("T4",), 16.0),
    (("RTX 4090",), 24.0),
    (("RTX 3090",), 24.0),
]
FP32 = 4
TOKEN_ID = 8  # int64
# Character vocabularies depend on the text; the estimate assumes the byte-sized upper
# bound, which any ASCII corpus stays under.
CHAR_VOCAB_BOUND = 256
# Tensors one transformer block keeps for backward, in units of B*T*C elements:
# the fp32 residual stream twice (block input, after attention), and in the activation
# dtype: ln_1 out, q/k/v, attention out, its contiguous copy, ln_2 out, the MLP's
# pre-activation (4) and its GELU (4). Flash attention keeps no T x T matrix.
RESIDUAL_TENSORS = 2
BLOCK_TENSORS = 15


def gpu_memory_bytes(name: str) -> int | None:
    """Memory of a GPU named like torch.cuda.get_device_name gives it; None if unknown."""
    for needles, memory_gb in GPU_MEMORY_GB:
        if all(needle.lower() in name.lower() for needle in needles):
            return int(memory_gb * 1e9)
    return None


def model_vocab_size(config: TrainConfig) -> int:
    if config.tokenizer == "bpe":
        assert config.vocab_size is not None  # TrainConfig fills the default
        return config.vocab_size
    return 256 if config.tokenizer == "byte" else CHAR_VOCAB_BOUND


def parameter_count(config: TrainConfig, vocab_size: int) -> int:
    """Parameters of trainer.model.GPT (the tied LM head counted once)."""
    C, L = config.n_embd, config.n_layer
    bias = 11 * C if config.bias else 0  # ln_1, c_attn (3C), c_proj, ln_2, c_fc (4C), c_proj
    per_block = 12 * C * C + 2 * C + bias
    final_norm = 2 * C if config.bias else C
    return vocab_size * C + config.block_size * C + L * per_block + final_norm


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    weights: int
    autocast_weights: int
    gradients: int
    optimizer: int
    activations: int
    update_snapshot: int
    ddp_buckets: int
    batches: int
    activations_without_checkpointing: int
    activations_with_checkpointing: int

    @property
    def terms(self) -> dict[str, int]:
        """Every term of the total, plus `parameters` (a count, not bytes)."""
        values = asdict(self)
        del values["activations_without_checkpointing"], values["activations_with_checkpointing"]
        return values

    @property
    def total_bytes(self) -> int:
        return sum(value for name, value in self.terms.items() if name != "parameters")

    def largest_term(self) -> tuple[str, int]:
        byte_terms = {k: v for k, v in self.terms.items() if k != "parameters"}
        name = max(byte_terms, key=lambda key: byte_terms[key])
        return name, byte_terms[name]


def activation_bytes(config: TrainConfig, vocab_size: int, checkpointing: bool) -> int:
    """Bytes one micro-batch keeps for backward at its peak."""
    B, T, C, L = config.batch_size, config.block_size, config.n_embd, config.n_layer
    act = 2 if config.precision in ("bf16", "fp16") else FP32
    btc = B * T * C
    block = btc * (RESIDUAL_TENSORS * FP32 + BLOCK_TENSORS * act)
    if checkpointing:
        # Each block's input stays; backward recomputes one block at a time.
        blocks = L * btc * FP32 + block
    else:
        blocks = L * block
    # Head: ln_f's input and output, the logits (activation dtype) and the fp32
    # log-softmax kept for backward, then the fp32 gradient of the logits in backward
    # (and, under autocast, the fp32 copy of the logits the loss is computed from).
    btv = B * T * vocab_size
    head = 2 * btc * FP32 + btv * (act + FP32 + FP32 + (FP32 if act != FP32 else 0))
    return blocks + head


def estimate_memory(config: TrainConfig, vocab_size: int | None = None) -> MemoryEstimate:
    """The memory one training process needs for `config`, in bytes."""
    vocab = vocab_size if vocab_size is not None else model_vocab_size(config)
    n = parameter_count(config, vocab)
    mixed = config.precision in ("bf16", "fp16")
    without = activation_bytes(config, vocab, checkpointing=False)
    with_ = activation_bytes(config, vocab, checkpointing=True)
    window = config.batch_size * config.block_size * TOKEN_ID * 2  # inputs and targets
    return MemoryEstimate(
        parameters=n,
        weights=n * FP32,
        autocast_weights=n * 2 if mixed else 0,
        gradients=n * FP32,
        optimizer=2 * n * FP32,
        activations=with_ if config.grad_checkpointing else without,
        update_snapshot=n * FP32,
        ddp_buckets=n * FP32 if config.nproc > 1 else 0,
        batches=window * (1 + 2 * config.eval_batches),  # train micro-batch, val + train evals
        activations_without_checkpointing=without,
        activations_with_checkpointing=with_,
    )


def advice(config: TrainConfig, term: str) -> str:
    """What to change when `term` is what does not fit."""
    if term == "activations":
        steps = [
            f"a smaller micro-batch (batch_size {config.batch_size}) with more "
            "grad_accum_steps for the same tokens per step",
            "a smaller block_size",
        ]
        if not config.grad_checkpointing:
            steps.append("grad_checkpointing: true")
        if config.precision == "fp32":
            steps.append("precision: bf16")
        return "; ".join(steps)
    if term in ("weights", "gradients", "optimizer", "update_snapshot", "autocast_weights"):
        return "a smaller model (n_layer, n_embd, vocab_size): every parameter costs ~16-20 bytes"
    if term == "batches":
        return "fewer eval_batches or a smaller batch_size"
    return "a smaller model or batch"
