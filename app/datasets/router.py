"""Dataset endpoints: upload a corpus, list corpora."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.datasets import service
from app.datasets.schemas import DatasetCreate, DatasetOut
from app.deps import ReadSession, SettingsDep, WriteSession, body_off_loop, openapi_body

router = APIRouter(tags=["datasets"])


@router.post(
    "/datasets",
    status_code=201,
    response_model=DatasetOut,
    openapi_extra=openapi_body(DatasetCreate),
)
def create_dataset(
    body: Annotated[DatasetCreate, Depends(body_off_loop(DatasetCreate))],
    session: WriteSession,
    settings: SettingsDep,
) -> DatasetOut:
    """Upload a text corpus; launch runs on it with `config.dataset` set to its name.
    Corpora can be hundreds of MB: the body is parsed off the event loop."""
    return service.create_dataset(session, settings, body)


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(session: ReadSession) -> list[DatasetOut]:
    """The built-in corpus first, then uploaded ones by name."""
    return service.list_datasets(session)
