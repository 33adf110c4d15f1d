"""One table from exceptions to HTTP status codes, and the handlers that apply it.

Routes never raise `HTTPException`: they (and `model/`) raise typed errors, and this module
turns each into ``{"detail": "<field>: <what was expected>, got <what came>"}`` with the status
below. Handlers are registered once, by `register_error_handlers`.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

from model.errors import (
    ArticleNotFoundError,
    BundleError,
    EmbeddingModelError,
    FieldTooLongError,
    InvalidArticleError,
    NewsDeskError,
    NotFittedError,
)
from model.store import StoreError

logger = logging.getLogger(__name__)


class ServiceError(NewsDeskError):
    """Base of the errors only the HTTP layer raises."""


class ModelUnavailableError(ServiceError):
    """No bundle is loaded (the message says why and how to fix it)."""


class StoreUnavailableError(ServiceError):
    """The article store could not be opened."""


class BadRequestError(ServiceError):
    """A request parameter is out of range or inconsistent (e.g. ``k`` above the limit)."""


class PayloadTooLargeError(ServiceError):
    """Too many articles in one request, or too many bytes in its body."""


class AdminDisabledError(ServiceError):
    """Admin endpoints are off because no admin token is configured."""


class UnauthorizedError(ServiceError):
    """Missing or wrong bearer token."""


class ForbiddenError(ServiceError):
    """The key is valid but lacks the role this endpoint needs."""


class RateLimitedError(ServiceError):
    """Too many requests from one key (or client, when open); ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SameArticleError(ServiceError):
    """Pair feedback names one article twice."""


class StoryNotFoundError(ServiceError):
    """No stored article belongs to this story id."""


class JobConflictError(ServiceError):
    """A retrain or promotion job is already running (one at a time)."""


class JobNotFoundError(ServiceError):
    """No job with this id (unknown, or from before a restart)."""


class BundleVersionNotFoundError(ServiceError):
    """No bundle version of this name under the bundle folder."""


class GenerationNotFoundError(ServiceError):
    """No vector generation of this id that could be retired (unknown, or the live one)."""


class VectorsMismatchError(ServiceError):
    """The shared store's vectors are another encoder's than the served bundle's: comparing them
    would be meaningless, so search and ingest refuse until the store is re-embedded."""


# Looked up along the exception's MRO, so the most specific entry wins.
STATUS_CODES: dict[type[BaseException], int] = {
    FieldTooLongError: 413,
    InvalidArticleError: 422,
    BadRequestError: 422,
    ArticleNotFoundError: 404,
    StoryNotFoundError: 404,
    PayloadTooLargeError: 413,
    UnauthorizedError: 401,
    AdminDisabledError: 403,
    ForbiddenError: 403,
    RateLimitedError: 429,
    NotFittedError: 409,
    SameArticleError: 409,
    JobConflictError: 409,
    VectorsMismatchError: 409,
    JobNotFoundError: 404,
    BundleVersionNotFoundError: 404,
    GenerationNotFoundError: 404,
    BundleError: 503,
    EmbeddingModelError: 503,
    ModelUnavailableError: 503,
    StoreUnavailableError: 503,
    StoreError: 503,
    NewsDeskError: 400,
}


# An absolute path in a message tells a caller how the server's disk is laid out; keep the last part.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"`,;()]+/)+([^\s/'\"`,;()]*)")


def redact_paths(text: str) -> str:
    """``/srv/news/bundles/v1/manifest.json`` → ``…/manifest.json`` (paths stay in the server log)."""
    return _ABSOLUTE_PATH.sub(lambda match: f"…/{match.group(1)}", text)


def _is_page(request: Request) -> bool:
    """A browser asking for one of the HTML pages (not the JSON API, not the docs)."""
    path = request.url.path
    return (
        request.method == "GET"
        and not path.startswith(("/v1/", "/metrics", "/docs", "/redoc", "/openapi"))
        and "text/html" in request.headers.get("accept", "")
    )


def status_for(error: BaseException) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return 500


async def _newsdesk_error(request: Request, error: Exception) -> Response:
    status = status_for(error)
    if status == 401 and _is_page(request):
        # A person at a page without a key: to the sign-in page, then back here.
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    if status >= 500:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, status, error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(error, RateLimitedError):
        headers = {"Retry-After": str(max(1, round(error.retry_after)))}
    return JSONResponse({"detail": redact_paths(str(error))}, status_code=status, headers=headers)


async def _sqlite_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("article store failed on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": redact_paths(f"article store unavailable: {error}")}, status_code=503)


# Discriminator tags of the one-or-many bodies: not field names, so left out of error paths.
_UNION_TAGS = frozenset({"one-article", "batch-of-articles"})
# Pydantic names a union branch by its type ("ImageIn", "str", "list[str]", "function-after[...]"):
# a reader wants `images[0].width`, not `images[0].ImageIn.width`.
_BRANCH = re.compile(
    r"^(str|int|float|bool|none|bytes|list\[.*\]|dict\[.*\]|[a-z-]+\[.*\]|function-.*|[A-Z]\w*(In|Out|Request|Batch))$"
)


def _location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc[1:] if loc and loc[0] in ("body", "query", "path") else loc:
        if isinstance(item, str) and (item in _UNION_TAGS or _BRANCH.match(item)):
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    if parts:
        return "".join(parts)
    return str(loc[0]) if loc else "body"


def describe_validation_error(error: dict[str, Any]) -> str:
    """One pydantic error as ``field: problem, got value`` (a person reads it, not a parser)."""
    where = _location(tuple(error.get("loc", ())))
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return f"body: not valid JSON ({reason}); send a JSON object"
    if kind == "missing" and where == "body":
        return "body: missing; send a JSON object (Content-Type: application/json)"
    if kind == "missing":
        return f"{where}: required field is missing"
    if "input" in error and kind not in ("value_error", "assertion_error"):
        shown = repr(error["input"])
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return f"{where}: {message}, got {shown}"
    return f"{where}: {message}"


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [describe_validation_error(dict(e)) for e in error.errors()]
    detail = "; ".join(dict.fromkeys(problems[:5]))
    if len(problems) > 5:
        detail += f"; and {len(problems) - 5} more"
    structured = [
        {
            "loc": [part for part in e.get("loc", ()) if not (isinstance(part, str) and _BRANCH.match(part))],
            "msg": str(e.get("msg")),
            "type": str(e.get("type")),
        }
        for e in error.errors()
    ]
    return JSONResponse({"detail": detail, "errors": structured}, status_code=422)


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(NewsDeskError, _newsdesk_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sqlite3.Error, _sqlite_error)
    # Exceptions no handler takes become a JSON 500 in `observability.RequestContext`, which keeps
    # the connection open (Starlette's own last-resort handler re-raises to the server).
