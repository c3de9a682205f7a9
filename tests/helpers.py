"""Shared test helpers: an injectable clock, request builders, stores with real fault
paths, and an httpx client that talks to an ASGI app over `https://testserver` (so that
`Secure` / `__Host-` cookies flow back and forth as a browser would send them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import httpx

from coatcheck import Lifetimes, RequestInfo, ServerSide, Session, SessionManager
from coatcheck.drivers import commit_session, open_session
from coatcheck.exceptions import StoreUnavailable
from coatcheck.stores import MemoryStore
from coatcheck.stores.base import Record

if TYPE_CHECKING:
    from starlette.requests import Request

COOKIE = "__Host-session"
BASE_URL = "https://testserver"
T0 = 1_700_000_000.0


class FakeClock:
    """A clock that moves only when told to; pass it as `clock=` to managers and stores."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def manager_for(
    store: Any,
    clock: FakeClock,
    *,
    lifetimes: Lifetimes | None = None,
    **options: Any,
) -> SessionManager:
    """A manager over `store` that reads `clock`; `lifetimes` default to no renewal so that
    tests which do not look at rotation are not disturbed by it."""
    return SessionManager(
        ServerSide(store=store),
        lifetimes=lifetimes if lifetimes is not None else Lifetimes(renewal=None),
        clock=clock,
        log_salt=b"test-salt",
        **options,
    )


def request(
    secret: str | None = None,
    *,
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    host: str = "testserver",
) -> RequestInfo:
    """A `RequestInfo` carrying `secret` in the session cookie (if given)."""
    all_headers = [("host", host), *headers]
    if secret is not None:
        all_headers.append(("cookie", f"{COOKIE}={secret}"))
    return RequestInfo(method=method, headers=all_headers, host=host, client_ip="192.0.2.1")


def cookie_value(headers: Iterable[tuple[str, str]], name: str = COOKIE) -> str | None:
    """The value a response's `Set-Cookie` headers give cookie `name` ("" when cleared)."""
    for key, value in headers:
        if key.lower() == "set-cookie" and value.startswith(f"{name}="):
            return value.split(";", 1)[0].split("=", 1)[1]
    return None


class Browser:
    """Runs requests through the sync drivers against one manager, keeping the cookie
    like a browser would. Sans-IO apart from the store: no server, no HTTP."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.secret: str | None = None
        self.last_headers: list[tuple[str, str]] = []

    def open(self, **kwargs: Any) -> Session:
        return open_session(self.manager, request(self.secret, **kwargs))

    def commit(self, session: Session) -> list[tuple[str, str]]:
        headers = commit_session(self.manager, session)
        self.last_headers = headers
        value = cookie_value(headers)
        if value is not None:
            self.secret = value or None
        return headers


class CountingStore(MemoryStore):
    """A real `MemoryStore` that counts its writes and the ones refused for a version
    conflict, so tests can see that nothing was written, or that a race really happened."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.saves = 0
        self.rotations = 0
        self.conflicts = 0

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        ok = super().save(key, data, version=version, ttl=ttl, user=user)
        self.saves += 1
        self.conflicts += not ok
        return ok

    def rotate(
        self,
        old_key: str,
        new_key: str,
        data: bytes,
        *,
        version: int,
        ttl: float,
        user: str | None,
    ) -> bool:
        ok = super().rotate(old_key, new_key, data, version=version, ttl=ttl, user=user)
        self.rotations += 1
        self.conflicts += not ok
        return ok


class DownStore:
    """An async store whose every operation fails the way an unreachable backend does."""

    def __init__(self, *, reads_work: bool = False) -> None:
        self.reads_work = reads_work

    def _fail(self) -> StoreUnavailable:
        return StoreUnavailable("store unreachable (test)")

    async def load(self, key: str) -> Record | None:
        if self.reads_work:
            return None
        raise self._fail()

    async def save(
        self, key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        raise self._fail()

    async def rotate(
        self,
        old_key: str,
        new_key: str,
        data: bytes,
        *,
        version: int,
        ttl: float,
        user: str | None,
    ) -> bool:
        raise self._fail()

    async def delete(self, key: str) -> None:
        raise self._fail()

    async def list_user(self, user: str) -> list[tuple[str, Record]]:
        raise self._fail()

    async def delete_user(self, user: str, *, keep: str | None = None) -> int:
        raise self._fail()

    async def purge_expired(self) -> int:
        raise self._fail()

    async def aclose(self) -> None:
        """Nothing to release."""


def client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client for the ASGI `app` at `https://testserver`; it keeps cookies."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL, **kwargs)


def session_of(request: Request) -> Session:
    """The coatcheck session of a Starlette request."""
    session = request.scope["session"]
    assert isinstance(session, Session)
    return session


def answered(response: httpx.Response) -> int:
    """The status, checked: 200 or a clean 503 (no cookie set, no traceback)."""
    assert response.status_code in (200, 503), (response.status_code, response.text)
    assert "Traceback" not in response.text
    if response.status_code == 503:
        assert response.headers.get("set-cookie") is None
    return response.status_code


def set_cookies(response: httpx.Response) -> list[str]:
    """Every `Set-Cookie` header of `response`."""
    return response.headers.get_list("set-cookie")


def session_set_cookie(response: httpx.Response) -> str | None:
    """The `Set-Cookie` header for the session cookie, or None."""
    found = [c for c in set_cookies(response) if c.startswith(f"{COOKIE}=")]
    assert len(found) <= 1, found
    return found[0] if found else None


def sent_secret(response: httpx.Response) -> str | None:
    """The session ID a response hands to the client ("" when it clears the cookie)."""
    header = session_set_cookie(response)
    return None if header is None else header.split(";", 1)[0].split("=", 1)[1]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll, bounded: for a state another connection reaches, not for time to pass."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


async def await_until(condition: Callable[[], bool], what: str) -> None:
    """`wait_until` for a state reached by another task of the running event loop."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def blocked_clients(url: str) -> int:
    """How many clients of the Redis server at `url` wait in a blocking command."""
    import redis

    raw = redis.Redis.from_url(url)
    try:
        return int(raw.info("clients")["blocked_clients"])
    finally:
        raw.close()
