"""Text corpora: the built-in one and those uploaded, stored as files under the data dir."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.datasets.schemas import DatasetCreate, DatasetOut
from app.errors import conflict, invalid, not_found
from app.models import Dataset
from trainer.corpus import BUILTIN_DATASET, builtin_corpus


@functools.cache
def builtin_dataset() -> DatasetOut:
    text = builtin_corpus()
    data = text.encode()
    return DatasetOut(
        name=BUILTIN_DATASET,
        builtin=True,
        size_bytes=len(data),
        n_chars=len(text),
        n_symbols=len(set(text)),
        sha256=hashlib.sha256(data).hexdigest(),
        created_at=None,
    )


def _out(dataset: Dataset) -> DatasetOut:
    return DatasetOut(
        name=dataset.name,
        builtin=False,
        size_bytes=dataset.size_bytes,
        n_chars=dataset.n_chars,
        n_symbols=dataset.n_symbols,
        sha256=dataset.sha256,
        created_at=dataset.created_at,
    )


def list_datasets(session: Session) -> list[DatasetOut]:
    rows = session.scalars(select(Dataset).order_by(Dataset.name)).all()
    return [builtin_dataset(), *(_out(row) for row in rows)]


def create_dataset(session: Session, settings: Settings, body: DatasetCreate) -> DatasetOut:
    if body.name == BUILTIN_DATASET:
        raise invalid("name", f"{BUILTIN_DATASET!r} is the built-in corpus's name")
    data = body.text.encode()
    if len(data) > settings.dataset_max_mb * 1024 * 1024:
        raise invalid("text", f"larger than {settings.dataset_max_mb} MB")
    if session.scalar(select(Dataset.id).where(Dataset.name == body.name)) is not None:
        raise conflict(f"a dataset named {body.name!r} exists already")
    digest = hashlib.sha256(data).hexdigest()
    filename = f"{body.name}-{digest[:12]}.txt"
    _write_atomically(settings.datasets_dir / filename, data)
    dataset = Dataset(
        name=body.name,
        filename=filename,
        size_bytes=len(data),
        n_chars=len(body.text),
        n_symbols=len(set(body.text)),
        sha256=digest,
    )
    session.add(dataset)
    try:
        session.flush()
    except IntegrityError:
        raise conflict(f"a dataset named {body.name!r} exists already") from None
    return _out(dataset)


def dataset_path(session: Session, settings: Settings, name: str) -> Path:
    """Where an uploaded dataset's text lives (the worker reads it from here)."""
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        raise not_found("dataset", repr(name))
    return settings.datasets_dir / dataset.filename


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
