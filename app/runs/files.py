"""A launched run's files under the data directory: its output log and checkpoints.

The worker writes `output.log` (the child's stdout and stderr) and the trainer writes
`ckpt_latest.pt` / `ckpt_best.pt`, each with a small JSON beside it holding its step and
val loss (this process never loads torch files)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import AsyncIterable
from pathlib import Path

import anyio

from app.config import Settings
from app.errors import invalid, not_found
from app.runs.schemas import CheckpointOut, LogChunk, RunFile, RunFiles

OUTPUT_LOG = "output.log"
CHECKPOINT_SUFFIX = ".pt"
# What a worker on another host hands over when its process ends (and fetches to resume
# a run another worker started): the checkpoints, their info, the output log.
EXCHANGED_FILES = (
    "ckpt_latest.pt",
    "ckpt_latest.json",
    "ckpt_best.pt",
    "ckpt_best.json",
    OUTPUT_LOG,
)
FILE_CHUNK = 1024 * 1024
LOG_TAIL_BYTES = 64 * 1024
# "2026-12-02 08:36:02,366 trainer.train building the model": the message after the
# logging format's time and logger name.
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:[,.]\d+)? [\w.]+ (?P<message>.+)$")


def run_dir(settings: Settings, run_id: int) -> Path:
    return settings.runs_dir / str(run_id)


def read_log(settings: Settings, run_id: int, offset: int | None, limit: int) -> LogChunk:
    """Bytes of output.log from `offset` (default: the last `limit` bytes), decoded; the
    next offset to ask for continues exactly where this chunk ended."""
    path = run_dir(settings, run_id) / OUTPUT_LOG
    try:
        size = path.stat().st_size
    except OSError:
        return LogChunk(text="", offset=0, next_offset=0, size=0, exists=False)
    tail = offset is None
    if offset is None:
        offset = max(0, size - limit)
    if offset > size:
        offset = 0  # the log was replaced (a fresh start): read it from the top
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read(min(limit, size - offset))
    if tail and offset > 0 and (newline := data.find(b"\n")) >= 0:
        # A tail starts at a line boundary, not mid-line.
        offset += newline + 1
        data = data[newline + 1 :]
    return LogChunk(
        text=data.decode("utf-8", errors="replace"),
        offset=offset,
        next_offset=offset + len(data),
        size=size,
        exists=True,
    )


def phase(settings: Settings, run_id: int) -> str | None:
    """What a started run's process last said (loading dataset, building the model, …):
    the last line of its log, without the logger's timestamp and name."""
    path = run_dir(settings, run_id) / OUTPUT_LOG
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4096))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if not lines:
        return None
    logged = _LOG_LINE.match(lines[-1])
    return (logged["message"] if logged else lines[-1])[:300]


def list_checkpoints(settings: Settings, run_id: int) -> list[CheckpointOut]:
    directory = run_dir(settings, run_id)
    try:
        paths = sorted(p for p in directory.iterdir() if _is_checkpoint(p.name))
    except OSError:
        return []
    checkpoints = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue  # replaced between the listing and now
        info = _info(path.with_suffix(".json"))
        step, val_loss = info.get("step"), info.get("val_loss")
        checkpoints.append(
            CheckpointOut(
                name=path.name,
                step=step if isinstance(step, int) else None,
                val_loss=val_loss if isinstance(val_loss, (int, float)) else None,
                size_bytes=stat.st_size,
                modified_at=stat.st_mtime,
                url=f"/api/runs/{run_id}/checkpoints/{path.name}",
            )
        )
    return checkpoints


def checkpoint_path(settings: Settings, run_id: int, name: str) -> Path:
    """A checkpoint's file, by the name the listing gives (never a path)."""
    if not _is_checkpoint(name) or os.sep in name or "/" in name:
        raise invalid("name", f"not a checkpoint name: {name[:80]!r}")
    path = run_dir(settings, run_id) / name
    if not path.is_file():
        raise not_found("checkpoint", name)
    return path


def _is_checkpoint(name: str) -> bool:
    return name.endswith(CHECKPOINT_SUFFIX) and not name.startswith(".")


def _info(path: Path) -> dict[str, object]:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def exchanged_file(settings: Settings, run_id: int, name: str) -> Path:
    """Where a run's exchanged file lives at the API, by its name (never a path)."""
    if name not in EXCHANGED_FILES:
        raise invalid("filename", f"must be one of {', '.join(EXCHANGED_FILES)}")
    return run_dir(settings, run_id) / name


def digest_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256")


def run_files(settings: Settings, run_id: int) -> RunFiles:
    """The run's folder at the API (device and inode, so a worker on the same disk sees
    that nothing needs copying) and the exchanged files it holds, with their sha256."""
    directory = run_dir(settings, run_id)
    directory.mkdir(parents=True, exist_ok=True)
    stat = directory.stat()
    files = {}
    for name in EXCHANGED_FILES:
        path = directory / name
        try:
            size = path.stat().st_size
        except OSError:
            continue
        try:
            sha256 = digest_path(path).read_text().strip() or None
        except OSError:
            sha256 = None  # written on this disk by a local worker, not uploaded
        files[name] = RunFile(size=size, sha256=sha256)
    return RunFiles(device=stat.st_dev, inode=stat.st_ino, files=files)


async def store_run_file(path: Path, chunks: AsyncIterable[bytes]) -> RunFile:
    """Write an uploaded file whole or not at all (a worker killed mid-upload leaves the
    previous copy in place), and remember its sha256. Writes run off the event loop."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.upload-{uuid.uuid4().hex}")
    digest = hashlib.sha256()
    size = 0
    try:
        async with await anyio.open_file(partial, "wb") as out:
            async for chunk in chunks:
                digest.update(chunk)
                await out.write(chunk)
                size += len(chunk)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    digest_path(path).write_text(digest.hexdigest())
    return RunFile(size=size, sha256=digest.hexdigest())
