"""A run's folder on disk: what the client could not (or was told not to) send yet, in a
form `trainlens sync` uploads later.

    trainlens-runs/20261202-071500-my-run-3f2a/
        run.json        name, config, how the run ended, which server run it became
        metrics.jsonl   one ingest row per line: {"step": .., "metrics": {..}, "time": ..}
        samples.jsonl   one text sample per line: {"step": .., "text": ..}

The .jsonl files are append-only and every line goes to the operating system in one
`os.write` on an O_APPEND descriptor, so a process killed at any moment (SIGKILL
included) leaves whole lines behind; a torn last line (power loss) is skipped by the
reader. Lines are in the exact shape the server ingests, so uploading them re-encodes
nothing. `run.json` is replaced atomically (write, fsync, rename).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

META = "run.json"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"


def default_folder_name(name: str | None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or "run").strip("-.")[:40] or "run"
    return f"{stamp}-{slug}-{uuid.uuid4().hex[:6]}"


class Journal:
    """One run's folder. Creating it is lazy for online runs (most never need it)."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.meta = meta
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}
        self._created = (folder / META).exists()

    @classmethod
    def open(cls, folder: str | Path) -> Journal:
        """An existing run folder (for `trainlens sync`)."""
        folder = Path(folder)
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        return cls(folder, meta)

    @staticmethod
    def is_run_folder(folder: Path) -> bool:
        return (folder / META).is_file()

    @property
    def created(self) -> bool:
        return self._created

    def ensure(self) -> None:
        """Create the folder and its run.json (once)."""
        if self._created:
            return
        with self._lock:
            if not self._created:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._write_meta()
                self._created = True

    def update_meta(self, **changes: Any) -> None:
        with self._lock:
            self.meta.update(changes)
            if self._created:
                self._write_meta()

    def _write_meta(self) -> None:
        temporary = self.folder / f".{META}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(self.meta, handle, indent=1, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.folder / META)

    def append(self, name: str, lines: list[bytes]) -> None:
        """Append whole lines (each ending in a newline) to `name`."""
        if not lines:
            return
        self.ensure()
        data = b"".join(lines)
        with self._lock:
            fd = self._fds.get(name)
            if fd is None:
                fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                self._fds[name] = fd
            view = memoryview(data)
            while view:  # a regular file takes it all at once; loop for the pedantic case
                written = os.write(fd, view)
                view = view[written:]

    def sync_to_disk(self) -> None:
        """fsync what was appended (the OS already has it; this survives a power cut)."""
        with self._lock:
            for fd in self._fds.values():
                os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._fds.clear()

    def size(self, name: str) -> int:
        try:
            return (self.folder / name).stat().st_size
        except FileNotFoundError:
            return 0

    def read_lines(
        self, name: str, offset: int = 0, max_lines: int | None = None
    ) -> tuple[list[bytes], int]:
        """Whole lines from byte `offset` on, and the offset after the last one returned.
        A last line without its newline (still being written, or torn) is not returned."""
        path = self.folder / name
        if not path.exists():
            return [], offset
        with open(path, "rb") as handle:
            handle.seek(offset)
            lines: list[bytes] = []
            position = offset
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                position += len(line)
                if line.strip():
                    lines.append(line)
                if max_lines is not None and len(lines) >= max_lines:
                    break
        return lines, position

    def iter_chunks(self, name: str, chunk_lines: int) -> Iterator[list[bytes]]:
        offset = 0
        while True:
            lines, offset = self.read_lines(name, offset, chunk_lines)
            if not lines:
                return
            yield lines


def run_folders(path: str | Path) -> list[Path]:
    """`path` itself when it is a run folder, else the run folders directly under it."""
    path = Path(path)
    if Journal.is_run_folder(path):
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder")
    return sorted(child for child in path.iterdir() if Journal.is_run_folder(child))
