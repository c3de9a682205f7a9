"""FastAPI dependency for typed session access::

    from coatcheck.adapters.fastapi import SessionDep

    @app.post("/cart")
    async def add(item: str, session: SessionDep) -> dict[str, list[str]]:
        session["cart"] = [*session.get("cart", []), item]
        return {"cart": session["cart"]}

Requires `coatcheck.adapters.asgi.SessionMiddleware` around the app.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from ..exceptions import ConfigurationError
from ..session import Session

__all__ = ["SessionDep", "get_session"]


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
