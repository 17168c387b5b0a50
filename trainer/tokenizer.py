"""Tokenizers: characters, UTF-8 bytes, and byte-level BPE trained on the run's own text.

The BPE tokenizer is Hugging Face `tokenizers`' byte-level BPE (GPT-2's scheme: any text
round-trips, no unknown tokens), trained locally at the start of a run: nothing comes
from a hub. Training is cached by the text's sha256 and the vocabulary size, so a
second run on the same dataset starts at once. The trained tokenizer travels inside
the checkpoint as its JSON string: resume and sampling decode exactly as training did,
even if the cache is gone. Torch-free.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

log = logging.getLogger(__name__)

# Bump when the training recipe changes, so stale cache entries are not reused.
BPE_RECIPE = "v1"
# Texts are handed to the Rust side in line-aligned chunks of about this many characters:
# large enough to amortise the call, small enough for its threads to share the work.
CHUNK_CHARS = 64_000


class CharTokenizer:
    """One token per distinct character of the corpus."""

    kind = "char"

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self.stoi = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as exc:
            raise ValueError(f"character {exc.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": self.chars}


class ByteTokenizer:
    """UTF-8 bytes: vocabulary 256, any text."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind}


class BPETokenizer:
    """Byte-level BPE. `vocab_size` is the configured size, which the model's embedding
    uses; a small corpus may run out of merges first (`trained_size` is then smaller),
    and the unused ids simply never occur."""

    kind = "bpe"

    def __init__(self, tokenizer: HFTokenizer, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no unknowns
            special_tokens=[],
            show_progress=False,
        )
        tokenizer.train_from_iterator(_chunks(text), trainer=trainer)
        return cls(tokenizer, vocab_size)

    @classmethod
    def from_json(cls, json_text: str, vocab_size: int) -> BPETokenizer:
        return cls(HFTokenizer.from_str(json_text), vocab_size)

    @property
    def trained_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        encodings = self.tokenizer.encode_batch_fast(list(_chunks(text)))
        return [token for encoding in encodings for token in encoding.ids]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "json": self.to_json()}


Tokenizer = CharTokenizer | ByteTokenizer | BPETokenizer


def _chunks(text: str) -> Iterator[str]:
    """Line-aligned pieces of text that concatenate back to it exactly."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + CHUNK_CHARS)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def bpe_cache_path(cache_dir: Path, text: str, vocab_size: int) -> Path:
    return cache_dir / f"bpe-{BPE_RECIPE}-{text_sha256(text)}-{vocab_size}.json"


def cached_bpe(text: str, vocab_size: int, cache_dir: Path | None) -> BPETokenizer:
    """The BPE tokenizer for (text, vocab_size): from the cache, or trained and cached.

    Written to a temporary file and renamed, so concurrent runs (or DDP ranks) never read
    a half-written entry; an unreadable entry is retrained.
    """
    if cache_dir is None:
        return BPETokenizer.train(text, vocab_size)
    path = bpe_cache_path(cache_dir, text, vocab_size)
    try:
        return BPETokenizer.from_json(path.read_text(encoding="utf-8"), vocab_size)
    except FileNotFoundError:
        pass
    except Exception:  # unreadable or corrupt (tokenizers raises a plain Exception): retrain
        log.warning("tokenizer cache entry %s is unreadable; retraining", path)
    tokenizer = BPETokenizer.train(text, vocab_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(tokenizer.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return tokenizer


def build_tokenizer(
    kind: str, text: str, vocab_size: int | None = None, cache_dir: Path | None = None
) -> Tokenizer:
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        if vocab_size is None:
            raise ValueError("the bpe tokenizer needs a vocab_size")
        return cached_bpe(text, vocab_size, cache_dir)
    raise ValueError(f"unknown tokenizer {kind!r}")


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    kind = state["kind"]
    if kind == "char":
        return CharTokenizer(state["chars"])
    if kind == "bpe":
        return BPETokenizer.from_json(state["json"], int(state["vocab_size"]))
    return ByteTokenizer()
