"""The one application error type, and the handlers that render every error as
{"detail": ...} so a client always learns what was wrong with its input."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

from app.jsonutil import sanitize

# Bad input is quoted in error messages at most this long: a client learns which value
# was wrong without a 5 MB key coming back three times.
QUOTE_LIMIT = 80


class AppError(Exception):
    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


class Problem(BaseModel):
    """Every error but a 422: what was wrong."""

    detail: str


class FieldProblem(BaseModel):
    loc: list[str | int]
    field: str
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """A 422: one entry per field that was wrong."""

    detail: list[FieldProblem]


def truncate(text: str, limit: int = QUOTE_LIMIT) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """repr() of a bad input, cut to `limit` characters."""
    return truncate(repr(value), limit)


def too_large_detail(limit: int) -> str:
    return (
        f"request body too large: the limit is {limit / (1024 * 1024):g} MB "
        "(TRAINLENS_MAX_BODY_MB; dataset uploads: TRAINLENS_DATASET_MAX_MB)"
    )


def not_found(what: str, ident: object) -> AppError:
    return AppError(404, f"{what} {truncate(str(ident))} not found")


def conflict(message: str) -> AppError:
    return AppError(409, message)


def invalid(field: str, message: str) -> AppError:
    """A 422 in the same shape FastAPI gives for body validation errors."""
    return invalid_fields([(field, message)])


def invalid_fields(problems: list[tuple[str, str]]) -> AppError:
    """A 422 naming every (field, reason) at once."""
    detail = []
    for field, message in problems:
        loc = [truncate(part) for part in field.split(".")]
        detail.append({"loc": loc, "field": ".".join(loc), "msg": message, "type": "value_error"})
    return AppError(422, detail)


def quoted(value: object, limit: int = 40) -> str:
    """Bad input, quoted for an error message: repr'd (control characters escaped) and
    cut to about `limit` characters, so a megabyte of garbage is not echoed back."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """("body", "rows", 3, "metrics", "train/loss") -> "rows[3].metrics.train/loss"."""
    path = ""
    for part in loc:
        if part in ("body", "query", "path", "header") and not path:
            continue
        if isinstance(part, str):
            part = truncate(part)
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def validation_detail(errors: list[Any], prefix: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    detail = []
    for error in errors:
        loc = (*prefix, *error.get("loc", ()))
        message = str(error.get("msg", "invalid"))
        # pydantic prefixes messages of ValueErrors raised in validators; the field
        # path already says where, so keep the reason plain.
        message = message.removeprefix("Value error, ")
        path = field_path(loc)
        detail.append(
            {
                "loc": [truncate(part) if isinstance(part, str) else part for part in loc],
                "field": path,
                "msg": f"{path}: {message}" if path else message,
                "type": str(error.get("type", "value_error")),
            }
        )
    return detail


def from_validation_error(error: ValidationError, prefix: tuple[Any, ...]) -> AppError:
    return AppError(422, validation_detail(error.errors(include_url=False), prefix))  # type: ignore[arg-type]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_request: Request, error: AppError) -> JSONResponse:
        return JSONResponse({"detail": sanitize(error.detail)}, status_code=error.status_code)

    @app.exception_handler(413)
    async def _too_large(request: Request, _error: StarletteHTTPException) -> JSONResponse:
        # Raised by the body limit as the body streams in (no Content-Length to go by).
        limit = int(request.scope.get(MAX_BODY_SIZE_SCOPE_KEY, 0))
        return JSONResponse({"detail": too_large_detail(limit)}, status_code=413)

    @app.exception_handler(404)
    async def _no_such_path(request: Request, _error: StarletteHTTPException) -> JSONResponse:
        # Only /api paths get here: the dashboard's mount serves its own HTML 404 page.
        return JSONResponse(
            {"detail": f"API path {truncate(request.url.path)} not found"}, status_code=404
        )

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_request: Request, error: RequestValidationError) -> JSONResponse:
        detail = validation_detail(list(error.errors()))
        return JSONResponse({"detail": sanitize(detail)}, status_code=422)
