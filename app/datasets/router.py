"""Dataset endpoints: upload a corpus, list corpora."""

from __future__ import annotations

from fastapi import APIRouter

from app.datasets import service
from app.datasets.schemas import DatasetCreate, DatasetOut
from app.deps import ReadSession, SettingsDep, WriteSession

router = APIRouter(tags=["datasets"])


@router.post("/datasets", status_code=201, response_model=DatasetOut)
def create_dataset(body: DatasetCreate, session: WriteSession, settings: SettingsDep) -> DatasetOut:
    """Upload a text corpus; launch runs on it with `config.dataset` set to its name."""
    return service.create_dataset(session, settings, body)


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(session: ReadSession) -> list[DatasetOut]:
    """The built-in corpus first, then uploaded ones by name."""
    return service.list_datasets(session)
