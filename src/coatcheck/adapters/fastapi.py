"""FastAPI dependency for typed session access::

    from fastapi import FastAPI

    from coatcheck import ServerSide, SessionManager
    from coatcheck.adapters.asgi import SessionMiddleware
    from coatcheck.adapters.fastapi import SessionDep

    app = FastAPI()
    app.add_middleware(SessionMiddleware, manager=SessionManager(ServerSide("memory://")))

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

`authenticated_session(max_age=..., assurance=...)` is the dependency of a route that needs
a recent login, or a login at a high enough assurance level (`coatcheck.assurance`)::

    Recent = Annotated[Session, Depends(authenticated_session(max_age=300, assurance="aal2"))]

    @app.post("/password")
    async def change_password(session: Recent) -> dict[str, bool]: ...

Its 401 carries an RFC 9470 challenge (`WWW-Authenticate`) and, as FastAPI renders an
`HTTPException`, the JSON body `{"detail": {"error": "insufficient_user_authentication",
"reason": ..., "max_age": ..., "acr_values": ...}}` (`StepUpRequired.detail`), wherever
the middleware sits.

Requires `coatcheck.adapters.asgi.SessionMiddleware` around the app. Tests send requests to
`https://testserver` (docs/testing.md): the default cookie is `Secure`.

Each dependency declares how a client authenticates as OpenAPI security schemes, so
`/docs` and `/openapi.json` show them (as alternatives): the session cookie
(`APIKeyCookie`) and the token header (`HTTPBearer`; `APIKeyHeader` for a `Header`
without a scheme). The module's dependencies name coatcheck's default transports
(`__Host-session`, `Authorization: Bearer`); `dependencies(manager)` builds them for the
manager's own transports. The schemes are documentation only: they never refuse a request
(the middleware has verified the session already; the `Required` dependencies answer 401).

A route decorated with `no_session` (above or below `@app.get(...)`) has no session: the
middleware loads none for it and the dependencies raise `SessionExcluded`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, NamedTuple

from ._extras import missing_extra

try:
    import fastapi  # noqa: F401 - imported here to name the extra if it is missing
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "fastapi", "fastapi") from None

from fastapi import Depends, HTTPException, Security
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPBearer
from fastapi.security.http import HTTPBase
from starlette.requests import HTTPConnection

from ..assurance import DEFAULT_LADDER, Ladder, Requirement
from ..exceptions import ConfigurationError, StepUpRequired
from ..manager import SessionManager
from ..routes import NO_SESSION, no_session
from ..session import Session
from ..transports import Cookie, Header, Transport
from .asgi import SessionRequired, require_session

__all__ = [
    "AuthenticatedSessionDep",
    "RequiredSessionDep",
    "SessionDep",
    "SessionDependencies",
    "authenticated_session",
    "dependencies",
    "get_authenticated_session",
    "get_required_session",
    "get_session",
    "no_session",
    "security_schemes",
]


def get_session(connection: HTTPConnection) -> Session:
    """The request's `Session`, as put in the scope by `SessionMiddleware`."""
    session = connection.scope.get("session")
    if not isinstance(session, Session):
        if session is NO_SESSION:
            NO_SESSION.refuse()  # SessionExcluded: the route has no session, by design
        raise ConfigurationError(
            "no coatcheck session in this request: add "
            "coatcheck.adapters.asgi.SessionMiddleware(app, manager=...) around the app"
        )
    return session


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


def authenticated_session(
    max_age: float | None = None,
    assurance: str | None = None,
    *,
    ladder: Ladder = DEFAULT_LADDER,
    manager: SessionManager | None = None,
) -> Callable[..., Session]:
    """A dependency: the request's session if its user authenticated at most `max_age`
    seconds ago, at level `assurance` or above on `ladder` (either may be None: any);
    otherwise a 401 whose JSON body's `detail` says why (`reason`; see
    `StepUpRequired.detail`) with its `WWW-Authenticate` challenge. The requirement is
    checked here, when the route is declared (`ConfigurationError`). It declares the
    security schemes of `manager`'s transports (default: coatcheck's), as `dependencies`
    does."""
    requirement = Requirement.of(max_age, assurance, ladder)

    def authenticated_session(connection: HTTPConnection) -> Session:
        """The request's session, if its latest authentication meets the route's needs."""
        try:
            return requirement.check(get_session(connection))
        except StepUpRequired as exc:
            # FastAPI's own handler renders HTTPException wherever the middleware sits (a
            # raised StepUpRequired passes FastAPI's error middleware first: a 500 when
            # SessionMiddleware wraps the app from outside).
            raise HTTPException(401, exc.detail, dict(exc.headers)) from None

    transports: Iterable[Transport] = [Cookie(), Header()]
    if manager is not None:
        transports = manager.transports
    return _declaring(authenticated_session, security_schemes(transports))


# -- OpenAPI security schemes ---------------------------------------------------------

#: The schemes `security_schemes` makes (`HTTPBearer` is an `HTTPBase`).
Scheme = APIKeyCookie | APIKeyHeader | HTTPBase


def security_schemes(transports: Iterable[Transport]) -> list[Scheme]:
    """The OpenAPI security scheme of each transport: `APIKeyCookie` for a `Cookie` (under
    its name), `HTTPBearer` for a `Header` with the Bearer scheme, `HTTPBase` for another
    scheme, `APIKeyHeader` for a header without one. None of them ever refuses a request
    (`auto_error=False`): they describe, the middleware and the dependencies decide."""
    schemes: list[Scheme] = []
    for transport in transports:
        scheme: Scheme
        if isinstance(transport, Cookie):
            scheme = APIKeyCookie(
                name=transport.name,
                scheme_name=f"Session cookie {transport.name}",
                description="The session cookie that coatcheck sets (HttpOnly: "
                "the browser sends it; API clients keep and send it as a cookie).",
                auto_error=False,
            )
        elif isinstance(transport, Header):
            description = f"The session token handed out in {transport.response_header}."
            if transport.scheme is None:
                scheme = APIKeyHeader(
                    name=transport.name,
                    scheme_name=f"Session token {transport.name}",
                    description=description,
                    auto_error=False,
                )
            elif transport.scheme.lower() == "bearer":
                scheme = HTTPBearer(
                    scheme_name="Session token", description=description, auto_error=False
                )
            else:
                scheme = HTTPBase(
                    scheme=transport.scheme,
                    scheme_name=f"Session token {transport.scheme}",
                    description=description,
                    auto_error=False,
                )
        else:  # another transport: nothing OpenAPI can describe
            continue
        schemes.append(scheme)
    return schemes


def _declaring(
    dependency: Callable[[HTTPConnection], Session], schemes: Sequence[Scheme]
) -> Callable[..., Session]:
    """`dependency`, with one `Security(scheme)` parameter per scheme in its signature (what
    FastAPI reads to list the schemes in OpenAPI); their values are ignored."""

    def declared(connection: HTTPConnection, **_schemes: Any) -> Session:
        return dependency(connection)

    parameters = [
        inspect.Parameter(
            "connection", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection
        ),
        *(
            inspect.Parameter(
                f"_scheme{i}", inspect.Parameter.KEYWORD_ONLY, default=Security(scheme)
            )
            for i, scheme in enumerate(schemes)
        ),
    ]
    declared.__signature__ = inspect.Signature(parameters, return_annotation=Session)  # type: ignore[attr-defined]
    declared.__name__ = declared.__qualname__ = dependency.__name__
    declared.__doc__ = dependency.__doc__
    return declared


class SessionDependencies(NamedTuple):
    """The three session dependencies for one set of transports: use them as
    `Annotated[Session, Depends(deps.session)]` (or `Depends(deps.required)`,
    `Depends(deps.authenticated)`)."""

    session: Callable[..., Session]
    required: Callable[..., Session]
    authenticated: Callable[..., Session]


def dependencies(manager: SessionManager) -> SessionDependencies:
    """The session dependencies, declaring the security schemes of `manager`'s transports
    (its cookie's name, its header) rather than coatcheck's defaults::

        deps = dependencies(manager)
        Me = Annotated[Session, Depends(deps.authenticated)]
    """
    return _dependencies(manager.transports)


def _dependencies(transports: Iterable[Transport]) -> SessionDependencies:
    schemes = security_schemes(transports)
    return SessionDependencies(
        _declaring(get_session, schemes),
        _declaring(get_required_session, schemes),
        _declaring(get_authenticated_session, schemes),
    )


_DEFAULTS = _dependencies([Cookie(), Header()])

SessionDep = Annotated[Session, Depends(_DEFAULTS.session)]
RequiredSessionDep = Annotated[Session, Depends(_DEFAULTS.required)]
AuthenticatedSessionDep = Annotated[Session, Depends(_DEFAULTS.authenticated)]
