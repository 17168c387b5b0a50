"""Request-scoped dependencies: the process's services and database sessions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Database
from app.metrics.cache import SeriesCache
from app.metrics.store import MetricStore

if TYPE_CHECKING:
    from app.stream.hub import EventHub


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def get_store(request: Request) -> MetricStore:
    return request.app.state.store  # type: ignore[no-any-return]


def get_cache(request: Request) -> SeriesCache:
    return request.app.state.cache  # type: ignore[no-any-return]


def get_hub(request: Request) -> EventHub:
    return request.app.state.hub  # type: ignore[no-any-return]


def read_session(db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    with db.session() as session:
        yield session


def write_session(db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    with db.session(write=True) as session:
        yield session


# scope="function": commit (or roll back) before the response is sent, so a client that
# got 201 and asks again sees what it wrote.
ReadSession = Annotated[Session, Depends(read_session, scope="function")]
WriteSession = Annotated[Session, Depends(write_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_db)]
StoreDep = Annotated[MetricStore, Depends(get_store)]
CacheDep = Annotated[SeriesCache, Depends(get_cache)]
HubDep = Annotated["EventHub", Depends(get_hub)]
