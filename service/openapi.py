"""The OpenAPI document describes what the service really answers.

FastAPI documents every 422 as its own `HTTPValidationError` (an array of errors), but this service
answers every error, validation included, as `ErrorOut` (`{"detail": "<field>: <problem>"}`, plus
`errors` for validation). This rewrites each operation's error responses to that one shape and
adds the answers every route can give (413 body too large, 429 rate limited, 401/403 keys), so a
client generated from the document, or schemathesis, sees the truth.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.config import Settings
from service.schemas import ErrorOut

_ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
_COMMON: dict[str, str] = {
    "401": "Missing or unknown API key (only when keys are configured).",
    "403": "The key lacks the role this endpoint needs.",
    "413": "Request body over the size limit.",
    "422": "A field is missing, of the wrong type or out of range: `detail` names it.",
    "429": "Rate limit reached: retry after the `Retry-After` header's seconds.",
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _apply_limits(components: dict[str, Any], settings: Settings) -> None:
    """Limits that are settings, stated in the document the service serves."""
    similar = components.get("SimilarRequest", {}).get("properties", {})
    if "k" in similar:
        similar["k"]["maximum"] = settings.max_k
    batch = components.get("ArticleBatch", {}).get("properties", {})
    if "articles" in batch:
        batch["articles"].update(minItems=1, maxItems=settings.max_batch)


def install_openapi(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorOut"] = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
        for defs_name, defs in components["ErrorOut"].pop("$defs", {}).items():
            components.setdefault(defs_name, defs)
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                for status, description in _COMMON.items():
                    if status == "413" and method not in ("post", "put", "patch"):
                        continue
                    if status in ("401", "403", "429") and path in ("/healthz", "/readyz"):
                        continue
                    existing = responses.get(status, {})
                    responses[status] = _error_response(existing.get("description") or description)
                for status, response in responses.items():
                    if status.startswith(("4", "5")) and status not in ("503",) and "content" in response:
                        response["content"] = {"application/json": {"schema": _ERROR_REF}}
        _apply_limits(components, settings)
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
