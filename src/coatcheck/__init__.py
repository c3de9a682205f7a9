"""coatcheck: session management for Python web apps that run on more than one server.

Server-side sessions (an opaque ID in a cookie, the data in a shared store) behind one API,
with hashed IDs at rest, idle/absolute/renewal timeouts, per-user listing and revocation,
and concurrency-safe writes. The core is sans-IO; adapters live in `coatcheck.adapters`,
stores in `coatcheck.stores`. Importing this package imports no web framework.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES as _EXTENSION_SUFFIXES

from . import manager as _manager
from .admin import AsyncSessionAdmin, SessionAdmin
from .clientside import ClientSide
from .exceptions import (
    CoatcheckError,
    ConfigurationError,
    CSRFError,
    SessionDataError,
    SessionExcluded,
    SessionLimitReached,
    SessionRequired,
    SessionTooLarge,
    SessionVanished,
    SessionWriteRefused,
    StoreError,
    StoreUnavailable,
    WriteConflict,
)
from .keys import KeyRing
from .lifetimes import Lifetimes
from .limits import SessionLimit
from .manager import Commit, Opening, ServerSide, SessionManager
from .request import RequestInfo
from .session import Session, SessionInfo
from .transports import Cookie, Header, Transport

__version__ = "0.1.0"

#: Whether the core runs compiled (mypyc: a platform wheel) or as Python source (the
#: pure-Python wheel, an sdist or an editable install). See docs/operating.md.
compiled: bool = (_manager.__file__ or "").endswith(tuple(_EXTENSION_SUFFIXES))

__all__ = [
    "AsyncSessionAdmin",
    "CSRFError",
    "ClientSide",
    "CoatcheckError",
    "Commit",
    "ConfigurationError",
    "Cookie",
    "Header",
    "KeyRing",
    "Lifetimes",
    "Opening",
    "RequestInfo",
    "ServerSide",
    "Session",
    "SessionAdmin",
    "SessionDataError",
    "SessionExcluded",
    "SessionInfo",
    "SessionLimit",
    "SessionLimitReached",
    "SessionManager",
    "SessionRequired",
    "SessionTooLarge",
    "SessionVanished",
    "SessionWriteRefused",
    "StoreError",
    "StoreUnavailable",
    "Transport",
    "WriteConflict",
]
