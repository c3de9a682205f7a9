"""FastAPI dependency for typed session access::

    from coatcheck.adapters.fastapi import SessionDep

    @app.post("/cart")
    async def add(item: str, session: SessionDep) -> dict[str, list[str]]:
        session["cart"] = [*session.get("cart", []), item]
        return {"cart": session["cart"]}

`RequiredSessionDep` (or `AuthenticatedSessionDep`, which also needs a logged-in user)
answers `401 Unauthorized` when the request has no established session, with
`WWW-Authenticate: Bearer error="invalid_token"` when its `Authorization` header carried an
expired, revoked or unknown token::

    @app.get("/me")
    async def me(session: AuthenticatedSessionDep) -> dict[str, str | None]:
        return {"user": session.user}

Requires `coatcheck.adapters.asgi.SessionMiddleware` around the app.
"""

from __future__ import annotations

from typing import Annotated

from ._extras import missing_extra

try:
    import fastapi  # noqa: F401 - imported here to name the extra if it is missing
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "fastapi", "fastapi") from None

from fastapi import Depends, HTTPException
from starlette.requests import HTTPConnection

from ..exceptions import ConfigurationError
from ..session import Session
from .asgi import SessionRequired, require_session

__all__ = [
    "AuthenticatedSessionDep",
    "RequiredSessionDep",
    "SessionDep",
    "get_authenticated_session",
    "get_required_session",
    "get_session",
]


def get_session(connection: HTTPConnection) -> Session:
    """The request's `Session`, as put in the scope by `SessionMiddleware`."""
    session = connection.scope.get("session")
    if not isinstance(session, Session):
        raise ConfigurationError(
            "no coatcheck session in this request: add "
            "coatcheck.adapters.asgi.SessionMiddleware(app, manager=...) around the app"
        )
    return session


SessionDep = Annotated[Session, Depends(get_session)]


def get_required_session(connection: HTTPConnection) -> Session:
    """The request's session if it is established; otherwise a 401 `HTTPException`
    carrying the `WWW-Authenticate` challenge of `coatcheck.adapters.asgi.challenge`."""
    return _required(connection, authenticated=False)


def get_authenticated_session(connection: HTTPConnection) -> Session:
    """The request's session if a user is logged in to it; otherwise a 401 as above."""
    return _required(connection, authenticated=True)


def _required(connection: HTTPConnection, *, authenticated: bool) -> Session:
    try:
        return require_session(connection, authenticated=authenticated)
    except SessionRequired as exc:
        # FastAPI's own handler renders HTTPException wherever the middleware sits.
        raise HTTPException(401, "this route requires a session", dict(exc.headers)) from None


RequiredSessionDep = Annotated[Session, Depends(get_required_session)]
AuthenticatedSessionDep = Annotated[Session, Depends(get_authenticated_session)]
