"""What the OpenAPI document says about bodies the handlers read raw, and the common answers.

Ingest, the schema API and token revocation read their bodies themselves (bounded, exact
numbers: shared/body.py), so FastAPI cannot infer the request body from a signature; each such
route names its model with `raw_body`, and `document_models` adds those models to the document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from shared.errors import problem_responses


def raw_body(model: str, media_types: tuple[str, ...] = ("application/json",)) -> dict[str, Any]:
    """`openapi_extra=` for a route whose handler reads a body itself, documented by the model
    of that name (added by `document_models`)."""
    schema = {"$ref": f"#/components/schemas/{model}"}
    return {"requestBody": {"required": True, "content": {media: {"schema": schema} for media in media_types}}}


def answers(scope: str, descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that needs a token with `scope`: the answers every such route
    can give (401, 403, 503), then the route's own."""
    return problem_responses({
        401: "Missing or invalid credentials",
        403: f"Token lacks scope {scope}",
        503: "Database unavailable; retry after Retry-After",
        **descriptions,
    })


def document_models(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add `models` (bodies read raw, the problem document) to the OpenAPI components."""
    base = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = base()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                spec = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(spec.pop("$defs", {}))
                components[model.__name__] = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
