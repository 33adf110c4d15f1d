"""Dependencies as `Annotated` aliases, so a handler's signature lists what it needs.

They are all ``async def``: none blocks, and FastAPI runs a plain ``def`` dependency in its
thread pool, a thread hop per dependency per request (profiled: a third of the request overhead).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from model.coverage.search import ArticleSearch
from model.news_model import NewsModel
from model.store import ArticleStore
from service.auth import KEY_COOKIE, OPEN, Principal, Role
from service.config import Settings
from service.errors import AdminDisabledError, ForbiddenError, RateLimitedError, UnauthorizedError
from service.retrain import Retrainer
from service.state import ServiceState


async def get_state(request: Request) -> ServiceState:
    return request.app.state.news


StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_app_settings(state: StateDep) -> Settings:
    """The settings this app was built with (not a dependency override: FastAPI re-analyses an
    override's signature on every request)."""
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_model(state: StateDep) -> NewsModel:
    """The model current when the request started; a reload meanwhile does not change it."""
    return state.require_model()


ModelDep = Annotated[NewsModel, Depends(get_model)]


async def get_search(state: StateDep, model: ModelDep) -> ArticleSearch:
    """Where this request searches related coverage (`ServiceState.search_for`), beside its model."""
    return state.search_for(model)


SearchDep = Annotated[ArticleSearch, Depends(get_search)]


async def get_store(state: StateDep) -> ArticleStore:
    return state.require_store()


StoreDep = Annotated[ArticleStore, Depends(get_store)]


async def get_retrainer(request: Request) -> Retrainer:
    """The retrain and promotion jobs of this process (built by the lifespan)."""
    return request.app.state.retrainer


RetrainerDep = Annotated[Retrainer, Depends(get_retrainer)]

# An article id in a path: the same rule on every route that takes one.
ArticleId = Annotated[str, Path(description="Article id, as returned by ingest or search.", max_length=200)]

_bearer = HTTPBearer(
    auto_error=False, description="An API key (NEWSDESK_API_KEYS) or the admin token (NEWSDESK_ADMIN_TOKEN)."
)


async def get_principal(
    state: StateDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Who is calling, from the bearer key (open mode: an anonymous caller), rate-limited per caller."""
    ring = state.keyring
    principal: Principal | None = None
    # The pages send the key as a cookie set by /login; the API as a bearer token.
    secret = credentials.credentials if credentials is not None else request.cookies.get(KEY_COOKIE)
    if secret is not None and ring.entries:  # with no key at all, a key means nothing
        principal = ring.identify(secret)
        if principal is None:
            raise UnauthorizedError(
                "unknown API key: send `Authorization: Bearer <key>` with a configured key"
            )
    elif ring.open:
        principal = OPEN
    else:
        raise UnauthorizedError("missing API key: send the header `Authorization: Bearer <key>`")
    caller = (
        principal.name if principal is not OPEN else f"ip:{request.client.host if request.client else '?'}"
    )
    wait = state.rate_limiter.take(caller)
    if wait > 0:
        raise RateLimitedError(
            f"rate limit: at most {state.settings.rate_limit_per_minute:g} requests per minute per key; "
            f"retry in {wait:.1f} s",
            wait,
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(role: Role) -> Callable[[Principal, ServiceState], Coroutine[Any, Any, Principal]]:
    async def check(principal: PrincipalDep, state: StateDep) -> Principal:
        if role == "admin" and not principal.has("admin") and not state.keyring.has_admin:
            raise AdminDisabledError(
                "admin endpoints are disabled: set NEWSDESK_ADMIN_TOKEN (or an admin key in "
                "NEWSDESK_API_KEYS) to enable them"
            )
        if not principal.has(role):
            if principal is OPEN:
                raise UnauthorizedError(
                    f"this endpoint needs the {role} role: send `Authorization: Bearer <key>`"
                )
            raise ForbiddenError(f"key {principal.name!r} lacks the {role} role this endpoint needs")
        return principal

    check.__name__ = f"require_{role}"
    return check


ReaderDep = Annotated[Principal, Depends(require("reader"))]
IngestDep = Annotated[Principal, Depends(require("ingest"))]
EditorDep = Annotated[Principal, Depends(require("editor"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]
