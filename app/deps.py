"""Request-scoped dependencies: the process's services and database sessions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Database
from app.errors import from_validation_error
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


Model = TypeVar("Model", bound=BaseModel)


def body_off_loop(model: type[Model]) -> Callable[[Request], Awaitable[Model]]:
    """A dependency that parses and validates a large JSON body in a worker thread, so a
    big upload never stalls other requests; the body-size limit applies as it streams
    in. Pair it with `openapi_body(model)` on the route."""

    async def parse(request: Request) -> Model:
        raw = await request.body()
        try:
            return await anyio.to_thread.run_sync(model.model_validate_json, raw)
        except ValidationError as error:
            raise from_validation_error(error, ("body",)) from None

    return parse


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """The request body of a route that uses body_off_loop, for the OpenAPI schema."""
    schema = model.model_json_schema()
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


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
