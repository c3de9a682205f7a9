"""What `SessionStore` decides, without I/O: what a Django session key names in the store,
Django's view of coatcheck's times, and how the user `django.contrib.auth` stores is bound.

Each sync/async twin of the store (`exists`/`aexists`, `delete`/`adelete`, `save`/`asave`,
`_load`/`_aload`) asks these the same questions, so that the twin itself is only its I/O.
"""

from __future__ import annotations

from datetime import datetime, timezone

from django.conf import settings

from ...exceptions import StoreCorrupted
from ...ids import handle_of, is_wellformed
from ...manager import SessionManager
from ...records import decode
from ...session import DEFAULT_ASSURANCE, Session
from ...stores.base import Record

#: Where `django.contrib.auth` keeps the logged-in user's primary key.
AUTH_USER_KEY = "_auth_user_id"


def handle(secret: str | None) -> str | None:
    """The handle of a key coatcheck may have stored (None for any other)."""
    return handle_of(secret) if isinstance(secret, str) and is_wellformed(secret) else None


def listed(manager: SessionManager, key: str, record: Record | None) -> bool:
    """Whether `record` (stored under `key`) is a live session: Django's `exists()`."""
    return record is not None and manager.describe(key, record) is not None


def corrupted(record: Record) -> bool:
    """Whether `record` is not coatcheck JSON (Django logs such a session as suspicious)."""
    try:
        decode(record.data)
    except StoreCorrupted:
        return True
    return False


def as_datetime(timestamp: float) -> datetime:
    """`timestamp` as Django's `timezone.now()` would give it (aware only with USE_TZ)."""
    if settings.USE_TZ:
        return datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return datetime.fromtimestamp(timestamp)


def bind_user(session: Session, now: float, *, cycled: bool) -> None:
    """Index the user `django.contrib.auth` put in the session. Binding a user to a
    session whose key was not cycled in this request (`cycled`) rotates the key, against
    session fixation, as `auth.login` would have."""
    value = session.data().get(AUTH_USER_KEY)
    user = None if value is None else str(value)
    if user == session.user:
        return
    if user is None:
        session.unbind_user()
    elif cycled or session.is_new:  # its key is new already: no second rotation
        session.user = user
        session._state.joins_user = True  # (a `SessionLimit` counts it, as for `login`)
        session.assurance = DEFAULT_ASSURANCE  # as `Session.login`'s default
        # As `Session.login`: the absolute timeout counts from the login.
        session.authenticated_at = session.created_at = now
    else:
        session.login(user)
