"""The built-in corpus: real text that needs no download.

It is the running interpreter's own standard library: the ASCII-only `.py` files,
read in sorted path order and capped at a few MB, so a fresh install can launch a run
with zero setup and every run on the same interpreter sees the same text. Torch-free,
and nothing here touches the network.
"""

from __future__ import annotations

import functools
import sysconfig
from pathlib import Path

BUILTIN_DATASET = "stdlib"
MAX_CHARS = 3_000_000
# Sub-trees that are either not the standard library or mostly generated noise.
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "idlelib", "lib2to3"}


def _stdlib_sources(root: Path) -> list[Path]:
    paths = [
        p for p in root.rglob("*.py") if not _SKIP_DIRS.intersection(p.relative_to(root).parts[:-1])
    ]
    return sorted(paths, key=lambda p: p.relative_to(root).as_posix())


@functools.cache
def builtin_corpus(max_chars: int = MAX_CHARS) -> str:
    """The standard-library corpus, deterministic for a given interpreter.

    ASCII-only files keep the character vocabulary near 100 symbols; files are taken
    whole, in order, until max_chars is reached.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    total = 0
    for path in _stdlib_sources(root):
        try:
            text = path.read_bytes().decode("ascii")
        except (OSError, UnicodeDecodeError):
            continue
        # Normalise line endings so the corpus is the same on every platform.
        text = text.replace("\r\n", "\n")
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    if not parts:
        raise RuntimeError(f"no readable standard-library sources under {root}")
    return "".join(parts)[:max_chars]
