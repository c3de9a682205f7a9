"""`Session`: the mapping an application reads and writes during one request.

It behaves like the `dict` every framework user knows, and records what the request did
with it: which keys were read, set or deleted, and which lifecycle step was asked for
(`login`, `logout`, `regenerate`). It performs no I/O; its mode's `commit` (through
`SessionManager.commit`) turns that record into store writes and headers once the
response starts.
"""

from __future__ import annotations

import copy
import math
import secrets
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._mypyc import mypyc_attr
from .exceptions import WriteConflict
from .ids import HANDLE_LENGTH, new_secret
from .lifetimes import Lifetimes

#: The assurance level a login records unless told otherwise: the lowest of the default
#: ladder (`coatcheck.assurance.DEFAULT_LADDER`). Records and tokens leave it out.
DEFAULT_ASSURANCE = "aal1"

if TYPE_CHECKING:
    from .plans import Opening
    from .records import Credentials
    from .request import RequestInfo
    from .transports import Transport

__all__ = ["DEFAULT_ASSURANCE", "CommitState", "Session", "SessionInfo", "fresh"]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What a listing shows of one session. Holds the handle only, never the secret."""

    id: str
    user: str | None
    created_at: float
    authenticated_at: float | None
    last_seen: float
    ip: str | None
    user_agent: str | None
    mode: str = "server"
    #: A "remember me" session (`Session.set_persistent`), and its deadlines as stored:
    #: the absolute one, and the idle one as of its last recorded request.
    persistent: bool = False
    absolute_deadline: float | None = None
    idle_deadline: float | None = None
    #: The assurance level of the session's latest authentication (None: anonymous).
    assurance: str | None = None


_MUTABLE = (list, dict)


def _json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (lists, dicts, immutable scalars): what `copy.deepcopy`
    does for these, at a fraction of its cost, since it need not handle any object."""
    if value.__class__ is list:
        return [_json_copy(v) if isinstance(v, _MUTABLE) else v for v in value]
    if value.__class__ is dict:
        return {k: _json_copy(v) if isinstance(v, _MUTABLE) else v for k, v in value.items()}
    return copy.deepcopy(value)  # a subclass of list or dict, put there by the application


class CommitState:
    """What the commit needs to know of a `Session` beyond its data: what the request asked
    for (`rotate`, `ended`, `logout_others`, `meta_changed`, `reissue`) and what the mode
    that loaded it knows (the secret, the record's version and credentials, the token
    generation...). Private: written by the session's lifecycle methods and by the modes,
    read by the modes' commit; applications and adapters use `Session`'s methods."""

    __slots__ = (
        "client_stale",
        "credentials",
        "ended",
        "generation",
        "joins_user",
        "lifetimes",
        "listed",
        "logout_others",
        "meta_changed",
        "migrated_sid",
        "now",
        "reauthenticated",
        "reissue",
        "request",
        "reused",
        "rotate",
        "secret",
        "stale_key",
        "superseded",
        "transport",
        "version",
    )

    def __init__(
        self,
        secret: str,
        now: float,
        version: int = 0,
        transport: Transport | None = None,
        request: RequestInfo | None = None,
        lifetimes: Lifetimes | None = None,
    ) -> None:
        self.secret = secret
        self.now = now
        #: The version of the record it was loaded from (0: none).
        self.version = version
        #: The transport the request used (the response answers in it), and the request.
        self.transport = transport
        self.request = request
        #: The manager's lifetimes, for the session's deadlines (given where the session is
        #: built, from the mode's `Context`; None: the defaults, for a session built
        #: outside a manager).
        self.lifetimes = lifetimes
        #: Why the secret rotates: "login", "regenerate", "renewal" (None: it does not).
        self.rotate: str | None = None
        self.ended = False
        self.logout_others = False
        #: Metadata changed (or a refresh is due): write although the data did not change.
        self.meta_changed = False
        #: Send the secret again although it did not change (a persistent cookie's expiry).
        self.reissue = False
        #: The client sent an ID that resolved to nothing (its cookie is cleared unless
        #: this session is saved), and a dead record to delete.
        self.client_stale = False
        self.stale_key: str | None = None
        #: A client-side token's sid that this server-side session was migrated from.
        self.migrated_sid: str | None = None
        #: What opens the session, kept by its mode: the stored verifier hashes (server
        #: side), the token generation that `regenerate()` advances (client side), and
        #: whether the request presented a secret that a renewal or `regenerate()` already
        #: replaced (accepted only for the grace window, so it may not mint a new one).
        self.credentials: Credentials | None = None
        self.generation = 0
        self.superseded = False
        #: Client side: whether the session has a registry record (the token was issued
        #: to a logged-in session, or the mode lists anonymous ones too).
        self.listed = False
        #: The commit adds this session to its user's sessions (`login`, or a framework
        #: binding a user): a `SessionLimit` applies to its write.
        self.joins_user = False
        #: The session whose replaced secret or token this request presented after the
        #: grace window, to end (`coatcheck.reuse`, `on_reuse="revoke"`): client side the
        #: commit revokes it; server side it is also the `stale_key` the commit deletes.
        self.reused: str | None = None
        #: `reauthenticate()` was called: a rebase keeps this request's authentication
        #: time and assurance level over the stored ones.
        self.reauthenticated = False


class Session(MutableMapping[str, Any]):
    """Per-request session state.

    Values must be JSON-serialisable. Changes made inside a list or dict that was read from
    the session (`session["cart"].append(item)`) are detected at commit, so they are saved
    like a plain assignment.

    `id` is the public handle of the session (safe to log, list or pass to `revoke`); the
    secret that the client carries is never exposed by this object, its `repr` or its errors.
    What the commit needs beyond the data lives in a private `CommitState`.
    """

    __slots__ = (
        "_accessed",
        "_changed",
        "_data",
        "_ops",
        "_reads",
        "_seen",
        "_state",
        "_user_agent",
        "assurance",
        "authenticated_at",
        "created_at",
        "csrf_secret",
        "id",
        "ip",
        "is_new",
        "last_seen",
        "mode",
        "persistent",
        "persistent_limits",
        "rotated_at",
        "user",
    )

    def __init__(
        self,
        data: dict[str, Any],
        state: CommitState,
        id: str,
        is_new: bool,
        created_at: float,
        last_seen: float,
        rotated_at: float,
        user: str | None,
        authenticated_at: float | None,
        persistent: bool,
        csrf_secret: str | None,
        mode: str,
    ) -> None:
        # The modes' constructor, positional: a call with keywords costs twice as much in
        # CPython, and every request builds a session. `Session.create` is the readable one.
        self._data = data
        self._state = state
        self._changed: set[str] = set()
        #: What the request read, as it was when it read it: a copy of each list or dict
        #: it read (in-place changes are found against it), and the value of any other key
        #: it read and then wrote (`ABSENT` if it was missing), taken just before the write.
        #: A written key found here that another request has changed since is a conflict
        #: (`WriteConflict`). `_seen`: the other keys read, which cost one set insertion.
        self._reads: dict[str, Any] = {}
        self._seen: set[str] = set()
        #: `increment` / `append` calls per key: re-applied to the stored value on conflict.
        self._ops: dict[str, Operations] | None = None
        self._accessed = False
        self.id = id
        self.is_new = is_new
        self.created_at = created_at
        self.last_seen = last_seen
        self.rotated_at = rotated_at
        self.user = user
        self.authenticated_at = authenticated_at
        #: The assurance level of the latest authentication (`login`, `reauthenticate`):
        #: None while no user is logged in. Set by the modes after construction.
        self.assurance: str | None = None if user is None else DEFAULT_ASSURANCE
        request = state.request
        self.ip = None if request is None else request.client_ip
        #: `FROM_REQUEST`: the request's `User-Agent`, read on first use (most requests
        #: never need it).
        self._user_agent: Any = FROM_REQUEST
        self.persistent = persistent
        #: What `set_persistent(absolute=..., idle=...)` asked for, in seconds (`math.inf`:
        #: as configured); None: nothing. Set by the modes from the record or token.
        self.persistent_limits: tuple[float, float] | None = None
        self.csrf_secret = csrf_secret
        self.mode = mode

    @classmethod
    def create(
        cls,
        data: dict[str, Any] | None = None,
        *,
        secret: str = "",
        id: str = "",
        is_new: bool = True,
        now: float = 0.0,
        created_at: float | None = None,
        last_seen: float | None = None,
        rotated_at: float | None = None,
        user: str | None = None,
        authenticated_at: float | None = None,
        persistent: bool = False,
        csrf_secret: str | None = None,
        version: int = 0,
        mode: str = "server",
        transport: Transport | None = None,
        request: RequestInfo | None = None,
        assurance: str | None = None,
        lifetimes: Lifetimes | None = None,
    ) -> Session:
        """A session from keywords, for tests and tools (the timestamps default to `now`;
        `assurance` to the lowest level for a session with a user; `lifetimes` to the
        defaults); the modes build theirs positionally."""
        state = CommitState(secret, now, version, transport, request, lifetimes)
        session = cls(
            {} if data is None else data,
            state,
            id,
            is_new,
            now if created_at is None else created_at,
            now if last_seen is None else last_seen,
            now if rotated_at is None else rotated_at,
            user,
            authenticated_at,
            persistent,
            csrf_secret,
            mode,
        )
        if assurance is not None:
            session.assurance = assurance
        return session

    @property
    def user_agent(self) -> str | None:
        """The client's `User-Agent`, as the current request sent it."""
        agent = self._user_agent
        if agent is FROM_REQUEST:
            request = self._state.request
            agent = None if request is None else request.header("user-agent")
            self._user_agent = agent
        return agent  # type: ignore[no-any-return]

    @user_agent.setter
    def user_agent(self, value: str | None) -> None:
        self._user_agent = value

    # -- mapping -------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self._accessed = True
        try:
            value = self._data[key]
        except KeyError:
            self._seen.add(key)
            raise
        if isinstance(value, _MUTABLE):
            if key not in self._reads and key not in self._changed:
                self._reads[key] = _json_copy(value)
        else:
            self._seen.add(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """`session[key]`, or `default` (the mixin's version costs a raised KeyError)."""
        if key in self._data:
            return self[key]
        self._accessed = True
        self._seen.add(key)
        return default

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        self._accessed = True
        if key in self._seen and key not in self._reads:
            self._reads[key] = self._data.get(key, _GONE)  # what the request read
        self._data[key] = value
        self._changed.add(key)
        if self._ops is not None:
            self._ops.pop(key, None)  # a plain write replaces the operations before it

    def __delitem__(self, key: str) -> None:
        self._accessed = True
        if key in self._seen and key not in self._reads:
            self._reads[key] = self._data.get(key, _GONE)
        del self._data[key]
        self._changed.add(key)
        if self._ops is not None:
            self._ops.pop(key, None)

    def increment(self, key: str, by: int | float = 1) -> int | float:
        """Add `by` to the number under `key` (0 if absent) and return the new value.

        Unlike `session[key] += by`, parallel increments never conflict or get lost: if
        another request changed `key` meanwhile, the commit adds `by` to the value it
        stored. (`session[key] += by` reads the key, so it is refused as a `WriteConflict`
        then, rather than silently undoing the other increment.)
        """
        if isinstance(by, bool) or not isinstance(by, (int, float)):
            raise TypeError("increment() takes an int or float")
        current = self._data.get(key, 0)
        if isinstance(current, bool) or not isinstance(current, (int, float)):
            raise TypeError(f"session[{key!r}] holds a {type(current).__name__}, not a number")
        self._operate(key, ("increment", by))
        self._data[key] = current + by
        return current + by

    def append(self, key: str, item: Any) -> None:
        """Append `item` to the list under `key` (a new list if absent).

        Parallel appends never conflict or get lost: if another request changed `key`
        meanwhile, the commit appends `item` to the list it stored.
        """
        current = self._data.get(key, _GONE)
        if current is _GONE:
            current = self._data[key] = []
        elif current.__class__ is not list:
            raise TypeError(f"session[{key!r}] holds a {type(current).__name__}, not a list")
        self._operate(key, ("append", item))
        current.append(item)

    def _operate(self, key: str, operation: tuple[str, Any]) -> None:
        self._accessed = True
        if key in self._seen and key not in self._reads:
            self._reads[key] = self._data.get(key, _GONE)
        if key in self._changed and (self._ops is None or key not in self._ops):
            return  # written plainly earlier in this request: the plain write carries it
        self._changed.add(key)
        if self._ops is None:
            self._ops = {}
        self._ops.setdefault(key, Operations()).append(operation)

    def __iter__(self) -> Iterator[str]:
        self._accessed = True
        return iter(self._data)

    def __len__(self) -> int:
        self._accessed = True
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self._accessed = True
        if isinstance(key, str):
            self._seen.add(key)
        return key in self._data

    def __repr__(self) -> str:
        user = f" user={self.user!r}" if self.user is not None else ""
        return f"<Session id={self.id[:8]}…{user} keys={sorted(self._data)!r}>"

    def clear(self) -> None:
        """Remove every key (cheaper than the mixin's key-by-key `popitem` loop)."""
        self._accessed = True
        for key in self._seen:
            if key not in self._reads:
                self._reads[key] = self._data.get(key, _GONE)
        self._changed.update(self._data)
        self._data.clear()

    # -- what the request did ------------------------------------------------------------

    @property
    def accessed(self) -> bool:
        """Whether the request read or wrote the session (responses then vary on it)."""
        return self._accessed

    @property
    def modified(self) -> bool:
        """Whether anything must be written: data, metadata or a lifecycle step."""
        state = self._state
        return bool(
            self._changed
            or state.rotate is not None
            or state.ended
            or state.logout_others
            or state.meta_changed
            or self._mutated_keys()
        )

    @modified.setter
    def modified(self, value: bool) -> None:
        # Flask's and Django's escape hatch: `session.modified = True` forces a save.
        self._state.meta_changed = value

    @property
    def ended(self) -> bool:
        """Whether `logout()` / `invalidate()` ended the session in this request."""
        return self._state.ended

    @property
    def client_stale(self) -> bool:
        """Whether the request presented a session ID or token that resolved to nothing
        (unknown, expired, revoked, tampered with): its copy is cleared unless this
        session is saved."""
        return self._state.client_stale

    @property
    def transport(self) -> Transport | None:
        """The transport the request used: the response answers in it."""
        return self._state.transport

    @property
    def request(self) -> RequestInfo | None:
        """The request this session was opened for."""
        return self._state.request

    def _mutated_keys(self) -> list[str]:
        return [k for k, v in self._reads.items() if self._data.get(k, _GONE) != v]

    def changes(self) -> dict[str, Any]:
        """Keys this request set or deleted (deleted keys map to `DELETED`), in-place
        mutations of read values included; keys changed only by `increment` / `append`
        map to their `Operations`."""
        keys = self._changed.union(self._mutated_keys())
        ops = self._ops or {}
        return {k: ops[k] if k in ops else self._data.get(k, DELETED) for k in keys}

    def read_value(self, key: str) -> Any:
        """What `key` held when this request first read it: `NOT_READ` if it never read
        it, `ABSENT` if it was missing. Internal: the conflict check of `ServerSide.rebase`."""
        return self._reads.get(key, NOT_READ)

    def data(self) -> dict[str, Any]:
        """The session's data as a plain dict (no access tracking)."""
        return self._data

    # -- lifecycle -----------------------------------------------------------------------

    def login(self, user: str, *, assurance: str = DEFAULT_ASSURANCE) -> None:
        """Bind `user` to this session, under a new handle and secret.

        `assurance` names how strongly the user proved who they are (e.g. `"aal2"` after
        a second factor; see `coatcheck.assurance`): it is recorded with the time of the
        login, signed into the token or stored in the record, never taken from the client.

        A login is a privilege change, so it ends the session's handle: every secret of the
        old handle stops working at once (no grace window), which defeats session fixation,
        and the CSRF token is replaced. The data is carried over. The authenticated session
        begins now: the absolute timeout counts from the login, not from when the anonymous
        session was opened (which would cut a fresh login short).

        On a request that presented a secret already replaced by a renewal (accepted only
        for the grace window), nothing of the old session is carried over: the login starts
        a new, empty session and leaves the old one to the holder of its current secret.
        """
        if not isinstance(user, str) or not user:
            raise TypeError("login() takes the user's identifier as a non-empty str")
        _check_level(assurance)
        self._accessed = True
        state = self._state
        if state.superseded:
            self._restart()
        self.user = user
        self.assurance = assurance
        self.csrf_secret = None
        self.authenticated_at = self.created_at = state.now
        state.rotate = "login"
        state.meta_changed = True
        state.joins_user = True

    def reauthenticate(self, *, assurance: str = DEFAULT_ASSURANCE) -> None:
        """Record that the logged-in user has just proved who they are again (password,
        second factor: a step-up), at level `assurance`, without a new login: the session
        keeps its handle, user and data; `authenticated_at` becomes now and `assurance`
        the level given, and the secret is replaced as by `regenerate()` (a privilege
        change; the replaced one opens the session only for the grace window).

        The two always describe one authentication, the latest: a re-authentication at a
        lower level than the session had lowers it (a password alone after a second factor
        is `"aal1"` now), so a route that needs `"aal2"` within 5 minutes never passes on
        a second factor proved hours ago. Raises `ValueError` on an anonymous session.
        """
        if self.user is None:
            raise ValueError("reauthenticate() needs a logged-in session; use login()")
        _check_level(assurance)
        self._accessed = True
        state = self._state
        self.assurance = assurance
        self.authenticated_at = state.now
        state.reauthenticated = True
        state.meta_changed = True
        self.regenerate()

    def is_fresh(self, max_age: float) -> bool:
        """Whether a user is logged in and last authenticated (`login`, `reauthenticate`)
        at most `max_age` seconds ago, by the request's clock. (A client-side token keeps
        the time in whole seconds, rounded down: a session may read up to a second older.)
        """
        self._accessed = True
        authenticated = self.authenticated_at
        if self.user is None or authenticated is None:
            return False
        return self._state.now - authenticated <= max_age

    def logout(self) -> None:
        """End the session everywhere: its record is destroyed and the cookie cleared."""
        self.invalidate()

    def invalidate(self) -> None:
        """End the session: delete its data and record and clear the client's copy.

        The rest of the request sees an empty, anonymous session. Whatever it puts there
        afterwards (a "you are logged out" message, a `login` as another user) is saved
        in a new session under a new ID, never under the ended one.
        """
        self._accessed = True
        self._changed.update(self._data)
        self._data.clear()
        self._reads.clear()
        self._seen.clear()
        self._ops = None
        self.user = None
        self.authenticated_at = None
        self.assurance = None
        self.csrf_secret = None
        self.persistent = False
        self.persistent_limits = None
        state = self._state
        state.ended = True
        state.logout_others = False
        state.rotate = None

    def regenerate(self) -> None:
        """Give the session a new secret and keep its handle and data.

        The old secret keeps opening this session for the grace window, so requests that
        are already in flight with it neither fork the session nor lose their writes. On a
        request that presented such an already-replaced secret this does nothing: a secret
        inside its grace window can never mint a new one.
        """
        self._accessed = True
        state = self._state
        if state.rotate != "login" and not state.superseded:
            state.rotate = "regenerate"

    def renew_handle(self) -> None:
        """Move the session to a new handle and secret, ending the old ones at once (no
        grace window), without changing its user or data: `login`'s rotation alone, for a
        framework that cycles the key before it knows the user (Django's `cycle_key`). On a
        request that presented an already-replaced secret, as `login`: a new, empty
        session, and the old one is left to the holder of its current secret."""
        self._accessed = True
        state = self._state
        if state.superseded:
            self._restart()
        state.rotate = "login"
        state.meta_changed = True

    def _restart(self) -> None:
        """Become a new, empty, anonymous session: what a login or `renew_handle` makes of
        a request that presented a secret a renewal already replaced (accepted only for
        the grace window), leaving the session to the holder of its current secret."""
        self._changed.clear()
        self._data.clear()
        self._reads.clear()
        self._seen.clear()
        self._ops = None
        self.is_new = True
        self.persistent = False
        self.persistent_limits = None
        self.user = self.authenticated_at = self.csrf_secret = self.assurance = None
        self._state.superseded = False

    def logout_other_devices(self) -> None:
        """End every other session of this session's user ("log out other devices")."""
        if self.user is None:
            raise ValueError("logout_other_devices() needs a logged-in session")
        self._accessed = True
        self._state.logout_others = True

    def unbind_user(self) -> None:
        """Forget the session's user without ending the session (a framework's own logout
        that keeps the session, e.g. Flask-Login's): it is no longer listed under the user
        nor ended by `revoke_user`. Call `regenerate()` too if the secret should change."""
        self._accessed = True
        if self.user is not None:
            self.user = None
            self.authenticated_at = None
            self.assurance = None
            self._state.meta_changed = True

    def set_persistent(
        self,
        persistent: bool = True,
        *,
        absolute: float | None = None,
        idle: float | None = None,
    ) -> None:
        """Make this a "remember me" session: its cookie outlives the browser until the
        session's absolute deadline, and it lives by `Lifetimes.persistent_absolute` and
        `persistent_idle` (when configured) instead of `absolute` and `idle`. By default
        session cookies end when the browser closes.

        `absolute` and `idle` (seconds) shorten this session's limits below the
        configured ones; they never lengthen them (the smaller of the two applies, on
        every request). The limits are stored with the session on the server side (in
        its record, or in its signed token's claims) and counted from when the session
        began (absolute) and from its last recorded request (idle), so a client can never
        change them. A later call with limits replaces them; one without keeps them.
        `set_persistent(False)` returns the session to the ordinary limits.
        """
        limits: tuple[float, float] | None = None
        if absolute is not None or idle is not None:
            if not persistent:
                raise ValueError("set_persistent(False) takes no absolute or idle limit")
            limits = (_limit(absolute, "absolute"), _limit(idle, "idle"))
        elif persistent:
            # Without limits, a persistent session keeps those it was given (Flask apps set
            # `session.permanent = True` on every request): only a call with limits, or
            # `set_persistent(False)`, replaces them.
            limits = self.persistent_limits
        self._accessed = True
        if persistent != self.persistent or limits != self.persistent_limits:
            self.persistent = persistent
            self.persistent_limits = limits
            self._state.meta_changed = True
            self._state.reissue = True

    # -- time remaining ------------------------------------------------------------------

    @property
    def lifetimes(self) -> Lifetimes:
        """This session's own lifetimes: the manager's, or for a persistent session its
        persistent limits as shortened by `set_persistent` (`Lifetimes.of`)."""
        lifetimes = self._state.lifetimes
        if lifetimes is None:
            lifetimes = _DEFAULT_LIFETIMES
        return lifetimes.of(self.persistent, self.persistent_limits)

    @property
    def absolute_deadline(self) -> float:
        """When the session ends however busy it is (seconds since the epoch)."""
        return self.created_at + self.lifetimes.absolute

    @property
    def idle_deadline(self) -> float:
        """When the session ends unless another request refreshes it, as it stands after
        this request: a request that records itself (a new session, one that is written,
        or, client side, one whose token is re-issued with a new idle deadline, at most
        once per `touch_interval`) moves it to now + idle; other requests leave it where
        the last recorded one put it (up to `touch_interval` earlier)."""
        lifetimes = self.lifetimes
        state = self._state
        seen = self.last_seen
        if self.is_new or (
            state.now - seen >= lifetimes.touch_interval if self.mode == "client" else self.modified
        ):
            seen = max(seen, state.now)
        return seen + lifetimes.idle

    @property
    def expires_at(self) -> float:
        """The earlier of `idle_deadline` and `absolute_deadline`: when the session ends
        if no further request refreshes it."""
        return min(self.idle_deadline, self.absolute_deadline)

    def remaining(self, now: float | None = None) -> float:
        """Seconds from `now` (default: the request's time) until `expires_at`, >= 0."""
        return max(0.0, self.expires_at - (self._state.now if now is None else now))

    @property
    def csrf_token(self) -> str:
        """A per-session secret to embed in forms as `csrf_token` or send as `X-CSRF-Token`.

        Created on first use, which makes a new session worth saving.
        """
        self._accessed = True
        if self.csrf_secret is None:
            self.csrf_secret = secrets.token_urlsafe(32)
            self._state.meta_changed = True
        return self.csrf_secret

    @property
    def secret(self) -> str:
        """The secret the client carries (what the transport sends back). For adapters
        that hand it out themselves (Django's session key); never log or show it."""
        return self._state.secret

    def _rekey(self, secret: str) -> None:
        """Take on server-side `secret` and its handle."""
        self._state.secret = secret
        self.id = secret[:HANDLE_LENGTH]

    def info(self) -> SessionInfo:
        """What a listing shows of this session."""
        return SessionInfo(
            self.id,
            self.user,
            self.created_at,
            self.authenticated_at,
            self.last_seen,
            self.ip,
            self.user_agent,
            self.mode,
            self.persistent,
            self.absolute_deadline,
            self.last_seen + self.lifetimes.idle,
            self.assurance,
        )


def fresh(opening: Opening, mode: str, lifetimes: Lifetimes, stale: str | None = None) -> Session:
    """A new, empty session for the request of `opening`, under a handle never sent
    before, living by `lifetimes` (the manager's); `stale`: a dead record the commit
    deletes."""
    secret = new_secret()
    now = opening.now
    state = CommitState(secret, now, 0, opening.transport, opening.request, lifetimes)
    state.client_stale = opening.presented
    state.stale_key = stale
    return Session(
        {}, state, secret[:HANDLE_LENGTH], True, now, now, now, None, None, False, None, mode
    )


_DEFAULT_LIFETIMES = Lifetimes()


def _limit(value: float | None, name: str) -> float:
    """A per-session limit given to `set_persistent`: seconds > 0 (None: as configured).
    Not a number: `TypeError` (as the compiled core's argument check raises it first); a
    number that is not a finite one > 0: `ValueError`."""
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"set_persistent({name}=...) takes a number of seconds, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"set_persistent({name}=...) takes a number of seconds > 0")
    return float(value)


def _check_level(assurance: object) -> None:
    if not isinstance(assurance, str) or not assurance:
        raise TypeError("an assurance level is a non-empty str, e.g. 'aal2'")


class _Deleted:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETED"


DELETED: Any = _Deleted()
#: `Session._user_agent` until the session first needs the request's `User-Agent` (to
#: save it): not read on every request.
FROM_REQUEST: Any = object()
#: `Session.read_value` of a key the request read while it was absent; of one it never read.
ABSENT: Any = object()
NOT_READ: Any = object()
_GONE = ABSENT


# A list subclass: compiled, a native class cannot subclass `list`.
@mypyc_attr(native_class=False)
class Operations(list[tuple[str, Any]]):
    """The `increment` / `append` calls a request made on one key, in order."""

    __slots__ = ()

    def apply(self, value: Any) -> Any:
        """The value these operations make of `value` (`ABSENT`: the key is missing), or
        `WriteConflict` if it no longer holds a number or a list."""
        for name, argument in self:
            if name == "increment":
                value = 0 if value is ABSENT else value
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise WriteConflict("the key no longer holds a number")
                value = value + argument
            else:
                value = [] if value is ABSENT else list(value) if value.__class__ is list else None
                if value is None:
                    raise WriteConflict("the key no longer holds a list")
                value.append(argument)
        return value
