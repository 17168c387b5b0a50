"""The OpenAPI schema states every status the service can answer, in the shapes it
really sends: the middleware's refusals (Host, token, cross-site, body size) and the
application's own 422 body, which is not FastAPI's default shape."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.errors import FieldProblem, Problem, ValidationProblem

REF = "#/components/schemas/{model}"

# status -> (applies to, description)
STATUSES: dict[int, str] = {
    400: "the Host header is not in TRAINLENS_ALLOWED_HOSTS",
    401: "a token is configured and the request carries neither it nor a session",
    403: "a state-changing request from another origin",
    404: "no such resource",
    409: "the resource's state does not allow this",
    413: "the request body is over the size limit",
    415: "a state-changing request whose body is not JSON",
    422: "input that does not validate; every wrong field is named",
}
UNSAFE_ONLY = {403, 409, 415}


def _problem(description: str, model: str) -> dict[str, Any]:
    schema = {"$ref": REF.format(model=model)}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _statuses(path: str, method: str) -> list[int]:
    if not path.startswith("/api"):
        return [400]
    statuses = [status for status in STATUSES if status not in UNSAFE_ONLY]
    if method in ("post", "put", "patch", "delete"):
        statuses += sorted(UNSAFE_ONLY)
    return sorted(statuses)


def document_errors(app: FastAPI) -> None:
    """Replace app.openapi by one that adds the error statuses to every operation."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (Problem, FieldProblem, ValidationProblem):
            components.update(
                model.model_json_schema(ref_template=REF).pop("$defs", {})  # nested models
            )
            components[model.__name__] = model.model_json_schema(ref_template=REF)
            components[model.__name__].pop("$defs", None)
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                for status in _statuses(path, method):
                    name = "ValidationProblem" if status == 422 else "Problem"
                    responses[str(status)] = _problem(STATUSES[status], name)
                if path == "/healthz":
                    responses["503"] = _problem("the database cannot be reached", "Problem")
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
