"""Dependencies as `Annotated` aliases, so a handler's signature lists what it needs."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from model.news_model import NewsModel
from service.config import Settings, get_settings
from service.errors import AdminDisabledError, UnauthorizedError
from service.state import ServiceState
from service.store import ArticleStore

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_state(request: Request) -> ServiceState:
    return request.app.state.news


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_model(state: StateDep) -> NewsModel:
    """The model current when the request started; a reload meanwhile does not change it."""
    return state.require_model()


ModelDep = Annotated[NewsModel, Depends(get_model)]


def get_store(state: StateDep) -> ArticleStore:
    return state.require_store()


StoreDep = Annotated[ArticleStore, Depends(get_store)]

_bearer = HTTPBearer(auto_error=False, description="The service's NEWSDESK_ADMIN_TOKEN.")


def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        raise AdminDisabledError(
            "admin endpoints are disabled: set NEWSDESK_ADMIN_TOKEN (or admin_token in the settings file) "
            "to enable them"
        )
    if credentials is None:
        raise UnauthorizedError("missing bearer token: send the header `Authorization: Bearer <admin token>`")
    # Constant-time comparison, so response timing does not leak the token.
    if not secrets.compare_digest(
        credentials.credentials.encode(), settings.admin_token.get_secret_value().encode()
    ):
        raise UnauthorizedError("wrong admin token")


AdminDep = Annotated[None, Depends(require_admin)]
