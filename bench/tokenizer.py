"""BPE tokenizer: training time and encoding rate (prints figures; never part of `make test`).

    python -m bench.tokenizer [--data PATH] [--repeats N]

Trains the byte-level BPE tokenizer the trainer uses (trainer/tokenizer.py) on the text
at vocab 1024 and 8192, and encodes the whole text with each; medians over repeats.
Also what a run's start pays (tokenizer + encoding the text): BPE cold (trains and
writes the cache entry) and warm (reads it) against the char tokenizer, in the same
run. Default text: Tiny Shakespeare when present, else the built-in corpus.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from trainer.corpus import builtin_corpus
from trainer.tokenizer import BPETokenizer, build_tokenizer

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
VOCABS = (1024, 8192)


def timed(fn: object, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SHAKESPEARE if SHAKESPEARE.exists() else None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    text = args.data.read_text(encoding="utf-8") if args.data else builtin_corpus()
    source = args.data.name if args.data else "built-in corpus"
    print(f"text: {source}, {len(text):,} characters, median of {args.repeats}")
    for vocab in VOCABS:
        train_s, tokenizer = timed(lambda v=vocab: BPETokenizer.train(text, v), args.repeats)
        assert isinstance(tokenizer, BPETokenizer)
        encode_s, ids = timed(lambda t=tokenizer: t.encode(text), args.repeats)
        n = len(ids)  # type: ignore[arg-type]
        print(
            f"vocab {vocab:>5}: train {train_s:6.2f} s   encode {encode_s:5.2f} s "
            f"= {n / encode_s / 1e6:5.2f} M tokens/s ({n:,} tokens, "
            f"{len(text) / n:.2f} chars/token)"
        )
    # What a run's start pays: build the tokenizer, encode the text (as trainer.train does).
    with tempfile.TemporaryDirectory() as cache:

        def start(kind: str, vocab: int | None = None) -> None:
            build_tokenizer(kind, text, vocab, Path(cache)).encode(text)

        char_s, _ = timed(lambda: start("char"), args.repeats)
        cold_s, _ = timed(lambda: start("bpe", 8192), 1)
        warm_s, _ = timed(lambda: start("bpe", 8192), args.repeats)
    print(
        f"run start (tokenizer + encode): char {char_s:.2f} s; bpe 8192 cold (trains, "
        f"caches) {cold_s:.2f} s = +{cold_s - char_s:.2f} s, warm (cached) {warm_s:.2f} s "
        f"= +{warm_s - char_s:.2f} s"
    )


if __name__ == "__main__":
    main()
