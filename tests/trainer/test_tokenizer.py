"""The BPE tokenizer: trained locally, lossless, cached, and restored from the checkpoint."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from tests.trainer.conftest import run, tiny_config
from trainer.checkpoint import LATEST, load_checkpoint
from trainer.memory import estimate_memory
from trainer.tokenizer import BPETokenizer, bpe_cache_path, build_tokenizer, tokenizer_from_state
from trainer.train import TOKENIZER_CACHE


def test_bpe_round_trips_any_text_and_compresses_its_corpus(corpus: str) -> None:
    tokenizer = BPETokenizer.train(corpus, 512)
    assert tokenizer.trained_size == 512 and tokenizer.vocab_size == 512
    ids = tokenizer.encode(corpus)
    assert tokenizer.decode(ids) == corpus
    assert len(ids) < len(corpus) / 2  # merges learned from the text shorten it
    assert max(ids) < 512
    # Byte-level: text the corpus never showed (accents, emoji, CRLF) still round-trips.
    unseen = "naïve café\r\n🚀 Ωmega\t\x00end"
    assert tokenizer.decode(tokenizer.encode(unseen)) == unseen


def test_training_is_cached_by_text_and_vocab_size(tmp_path: Path, corpus: str) -> None:
    text = corpus[:50_000]
    first = build_tokenizer("bpe", text, 600, tmp_path)
    path = bpe_cache_path(tmp_path, text, 600)
    assert path.exists()
    # The cache entry is what a second build returns: poison-free, identical.
    second = build_tokenizer("bpe", text, 600, tmp_path)
    assert second.to_json() == first.to_json() == path.read_text(encoding="utf-8")
    # A different vocab size or a different text is a different entry.
    build_tokenizer("bpe", text, 700, tmp_path)
    build_tokenizer("bpe", text + "x", 600, tmp_path)
    assert len(list(tmp_path.glob("bpe-*.json"))) == 3


def test_a_fresh_model_starts_at_ln_vocab_and_resume_restores_the_tokenizer(
    tmp_path: Path, corpus: str
) -> None:
    config = tiny_config(tokenizer="bpe", vocab_size=1024, max_steps=10, dropout=0.0)
    out = tmp_path / "run"
    result, sink = run(config, corpus, out)
    assert result.status == "completed"
    first_loss = sink.series("train/loss")[1][0]
    assert abs(first_loss - math.log(1024)) < 0.3, first_loss
    # The rules read the real vocabulary: the config and the marker both carry 1024.
    assert config.vocab_size == 1024
    assert sink.series("data/vocab_size")[1] == [1024]
    estimate = sink.series("sys/mem_estimate_gb")[1][0]
    assert estimate == estimate_memory(config, 1024).total_bytes / 1e9
    assert (tmp_path / TOKENIZER_CACHE).is_dir()

    saved = load_checkpoint(out / LATEST)["tokenizer"]
    original = tokenizer_from_state(saved)
    # Resume on different text with the cache gone: a tokenizer rebuilt from the text
    # would differ; the one from the checkpoint must not.
    shutil.rmtree(tmp_path / TOKENIZER_CACHE)
    other_text = corpus[::-1]
    resumed_config = config.model_copy(update={"max_steps": 15})
    result, sink = run(resumed_config, other_text, out, resume=True)
    assert result.status == "completed" and result.step == 15
    restored = tokenizer_from_state(load_checkpoint(out / LATEST)["tokenizer"])
    assert restored.to_json() == original.to_json()
    ids = list(range(0, 1024, 3))  # merges from every part of the vocabulary
    assert restored.decode(ids) == original.decode(ids)
    assert not (tmp_path / TOKENIZER_CACHE).exists()  # nothing was retrained


def test_a_corrupt_cache_entry_is_retrained(tmp_path: Path, corpus: str) -> None:
    text = corpus[:30_000]
    path = bpe_cache_path(tmp_path, text, 512)
    path.write_text("{not json", encoding="utf-8")
    tokenizer = build_tokenizer("bpe", text, 512, tmp_path)
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert path.read_text(encoding="utf-8") == tokenizer.to_json()
