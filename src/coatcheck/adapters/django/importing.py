"""Sessions of the project's previous Django session engine, carried over to coatcheck
once, on first sight: `COATCHECK["import_from"] = "django.contrib.sessions.backends.db"`
(or `cache`, `cached_db`, `file`, `signed_cookies`).

A request whose `SESSION_COOKIE_NAME` cookie is not a coatcheck session key is read
through the previous engine's own `SessionStore` (`load()`), so every check that engine
makes applies: its expiry, its signature (`signed_cookies`, and the signed encoding of
`db`, `cache` and `file`), its key format. A session that fails any of them loads empty
in that engine, and nothing is imported: the request is anonymous and the stale cookie is
deleted. Nothing here decodes the old engine's data itself (no unpickling, whatever the
project's `SESSION_SERIALIZER`): only the engine's API is called.

What loads becomes a new coatcheck session in the same request: every key kept (the
`django.contrib.auth` user id, backend and auth hash among them, so `request.user` is the
same user, and a password changed since still logs it out), the user bound to the session
(listed and revocable), under a new key. Once that session is saved, the old one is
deleted through the engine (`delete()`) and `session.imported` is logged on
`coatcheck.session` with the new session's salted hash and the old key's (`old=`), never
either key (`old_deleted=no` if the old storage failed at that moment: the browser gets
the new cookie all the same, and the old session expires where it is). A response that
saves nothing (a 5xx) deletes nothing: the next request imports again.

Two requests arriving at once with the same old key each import it (two coatcheck
sessions of the user, the older one unused until it expires); the old engine is read
once per request and per key, only while `import_from` is set.

A `flush()` (Django's `logout`) in the request that imports, before the new session was
saved, deletes the old session too (`session.import_discarded`): a logout on the first
request after the switch leaves nothing that the old cookie, replayed, could import.

A failure of the old engine's storage (its database or cache down) raises
`StoreUnavailable`: a 503 with coatcheck's middleware, and the old cookie is kept for the
next attempt, rather than logging the user out.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.contrib.sessions.backends.base import SessionBase

from ...exceptions import StoreUnavailable

__all__ = ["Legacy", "read"]


class Legacy:
    """A session the previous engine vouched for: its data, and the engine's object that
    deletes it."""

    __slots__ = ("data", "engine", "key", "old")

    def __init__(self, engine: str, key: str, old: SessionBase, data: dict[str, Any]) -> None:
        self.engine = engine
        #: The cookie value it came under (a secret: hashed before it is logged).
        self.key = key
        self.old = old
        self.data = data

    def delete(self) -> bool:
        """Delete the old session through its engine; whether that worked. (Sync: the
        async path runs it in Django's thread-sensitive executor.) A failure is not the
        request's: the browser gets the new cookie in place of the old one, and the old
        session expires in its engine's storage."""
        try:
            self.old.delete()
        except Exception:  # whatever the old storage raises
            return False
        return True


def read(engine: str, key: str) -> Legacy | None:
    """The session `engine` keeps under the cookie value `key`, if that engine's own
    checks accept it and it holds anything; else None."""
    try:
        old: SessionBase = import_module(engine).SessionStore(session_key=key)
        data = old.load()
    except Exception as exc:  # the engine's storage failed: not a verdict on the session
        raise StoreUnavailable(_failed(engine, exc)) from None
    if not data:
        return None
    return Legacy(engine, key, old, dict(data))


def _failed(engine: str, exc: Exception) -> str:
    return f"import_from {engine} failed ({type(exc).__name__})"
