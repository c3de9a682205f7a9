"""Flask sessions backed by coatcheck: `app.session_interface = SessionInterface(manager)`.

`flask.session` keeps working as Flask documents it (`session["cart"] = ...`, `flash()`,
`session.permanent`, `session.modified`, Flask-Login on top), while the session lives where
the manager says (a store, or a signed token) with coatcheck's hashed IDs, timeouts,
rotation, listing, revocation and concurrency-safe writes::

    from flask import Flask
    from coatcheck import ServerSide, SessionManager
    from coatcheck.adapters.flask import SessionInterface

    app = Flask(__name__)
    SessionInterface(SessionManager(ServerSide("sqlite:///sessions.db"))).init_app(app)

Cookie settings come from the manager's transport, not from Flask's `SESSION_COOKIE_*`;
`SessionInterface.from_flask_config(app, store=...)` builds a manager from those settings
for applications that want them. All session logic runs in the manager and the drivers;
this module maps Flask's request and response onto them.

Unsafe cross-origin requests that fail the CSRF check get `403 Forbidden` and a store that
is down at load gives `503 Service Unavailable`: both are raised from the request's
dispatch (as Flask raises a routing error), so the application's error handlers render
them. What fails at commit, after the view, replaces the response (see
`coatcheck.adapters.failures`): `503` for the store, `409 Conflict` for a write computed
from a value another request has replaced since, `413` for a session too large, `500` for
one that cannot be serialised; nothing is saved. With `fail_open=True` a store failure is
never a 503: an anonymous unsaved session at load, the write dropped at commit; both are
counted (`load_failures.total`, `commit_failures.total`) and logged once per 10 s.

`SessionInterface(manager, import_from="flask")` carries sessions over from Flask's own
signed cookie (`"flask-session-redis"`: from Flask-Session's Redis store) so that switching
logs no one out: a request whose old session verifies under the old interface's own
checks gets a coatcheck session holding the same data (Flask-Login's user bound to it) in
that same response, and the old cookie (and Redis key) is deleted once it is saved. A
cookie that fails them (tampered, expired, unknown) reads as anonymous and is logged on
`coatcheck.security` (`session.import_rejected`); each import on `coatcheck.session`
(`session.imported`). See `coatcheck.adapters._flask_import` and docs/flask.md.

`@recent_login_required(max_age=300, assurance="aal2")` guards a view that needs a recent
login at a high enough assurance level (`coatcheck.assurance`): otherwise the view does
not run and the answer is a 401 with an RFC 9470 challenge and a JSON body saying why
(`StepUpRequired`), with the session's own headers as any response.

`SessionInterface(manager, exclude=[...])` (paths, prefixes, patterns: `coatcheck.routes`;
matched against `request.path`) and views decorated with `no_session` have no session:
nothing is loaded or saved and no header is added; `flask.session` raises
`SessionExcluded` there. Flask opens the session before it matches the URL, so a marked
view costs one more URL match per request, paid only by apps that mark a view.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from importlib.util import find_spec
from typing import Any, TypeVar

from ._extras import missing_extra

try:
    import flask  # noqa: F401 - imported here to name the extra if it is missing
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "flask", "flask") from None

from flask import Flask, Request, Response
from flask import session as current_session
from flask.globals import request_ctx
from flask.sessions import SessionInterface as FlaskSessionInterface
from flask.sessions import SessionMixin
from werkzeug.exceptions import Forbidden, HTTPException, ServiceUnavailable

from ..assurance import DEFAULT_LADDER, Ladder, Requirement
from ..drivers import commit_session, open_session
from ..exceptions import ConfigurationError, CSRFError, SessionExcluded, StoreError
from ..ids import is_wellformed
from ..manager import ServerSide, SessionManager
from ..responses import Answer, merge_headers, title_case
from ..routes import ExcludeSpec, exclusions, is_marked, no_session
from ..session import DEFAULT_ASSURANCE, Session, SessionInfo
from ..stores import AsyncStore, Store
from ..transports import Cookie
from . import failures
from ._flask_import import Imported, Reader, Rejected, reader_for
from .wsgi import check_csrf, request_info

__all__ = [
    "ExcludedSession",
    "FlaskSession",
    "SessionInterface",
    "connect_flask_login",
    "no_session",
    "recent_login_required",
]

_STORES = (str, Store, AsyncStore)


class FlaskSession(SessionMixin):
    """`flask.session`: Flask's `SessionMixin` over a coatcheck `Session`.

    Mapping operations go to the coatcheck session, which tracks every key set, deleted or
    mutated in place (`session["cart"].append(...)` is saved without `modified = True`).
    `permanent` is the session's persistent-cookie flag (`Session.set_persistent`), `new`
    whether the session started with this request, and `coatcheck` the `Session` itself,
    whose lifecycle methods (`login`, `logout`, `regenerate`, ...) are also offered here.
    Values must be JSON-serialisable: tuples come back as lists, `Markup` as `str`.
    """

    def __init__(self, session: Session, *, saved: bool = True) -> None:
        self.coatcheck = session
        self._saved = saved
        #: An old session carried into this one: finished (deleted, logged) once saved.
        self._imported: Imported | None = None
        #: The old cookie to clear in the response (its name, path and domain).
        self._clear_old: tuple[str, str, str | None, bool] | None = None

    # -- mapping -------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.coatcheck[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.coatcheck[key] = value

    def __delitem__(self, key: str) -> None:
        del self.coatcheck[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.coatcheck)

    def __len__(self) -> int:
        return len(self.coatcheck)

    def __contains__(self, key: object) -> bool:
        return key in self.coatcheck

    def clear(self) -> None:
        self.coatcheck.clear()

    def __repr__(self) -> str:
        return f"<FlaskSession {self.coatcheck!r}>"

    # -- SessionMixin --------------------------------------------------------------------

    @property
    def modified(self) -> bool:
        return self.coatcheck.modified

    @modified.setter
    def modified(self, value: bool) -> None:
        self.coatcheck.modified = value

    @property
    def accessed(self) -> bool:
        return self.coatcheck.accessed

    @accessed.setter
    def accessed(self, value: bool) -> None:
        # Flask sets this whenever the `session` proxy is used: the response then depends
        # on the cookie. Reading the length is how a `Session` learns it was accessed.
        if value:
            len(self.coatcheck)

    @property
    def new(self) -> bool:  # type: ignore[override]  # a plain attribute in SessionMixin
        return self.coatcheck.is_new

    @property
    def permanent(self) -> bool:
        return self.coatcheck.persistent

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self.coatcheck.set_persistent(bool(value))

    # -- coatcheck -----------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The session's handle (safe to show, list and revoke; never the cookie)."""
        return self.coatcheck.id

    @property
    def user(self) -> str | None:
        return self.coatcheck.user

    @property
    def csrf_token(self) -> str:
        """The session's CSRF token, for forms (`csrf_token`) or `X-CSRF-Token`."""
        return self.coatcheck.csrf_token

    @property
    def assurance(self) -> str | None:
        """The assurance level of the latest authentication (see `Session.assurance`)."""
        return self.coatcheck.assurance

    def login(self, user: str, *, assurance: str = DEFAULT_ASSURANCE) -> None:
        """Bind `user` and rotate the ID (see `Session.login`)."""
        self.coatcheck.login(user, assurance=assurance)

    def reauthenticate(self, *, assurance: str = DEFAULT_ASSURANCE) -> None:
        """Record a fresh proof of identity (see `Session.reauthenticate`)."""
        self.coatcheck.reauthenticate(assurance=assurance)

    def logout(self) -> None:
        """End the session everywhere and clear the cookie (see `Session.logout`)."""
        self.coatcheck.logout()

    def regenerate(self) -> None:
        self.coatcheck.regenerate()

    def logout_other_devices(self) -> None:
        self.coatcheck.logout_other_devices()

    def info(self) -> SessionInfo:
        return self.coatcheck.info()


class ExcludedSession(SessionMixin):
    """`flask.session` in a route excluded from sessions: any read or write raises
    `SessionExcluded` (Flask itself only sets `accessed`, which is allowed); nothing is
    saved and no header is added."""

    def _refuse(self) -> SessionExcluded:
        return SessionExcluded(
            "this route is excluded from sessions (exclude=[...] or @no_session), so it "
            "has no session: remove it from the exclusions to use flask.session here"
        )

    def __getitem__(self, key: str) -> Any:
        raise self._refuse()

    def __setitem__(self, key: str, value: Any) -> None:
        raise self._refuse()

    def __delitem__(self, key: str) -> None:
        raise self._refuse()

    def __iter__(self) -> Iterator[str]:
        raise self._refuse()

    def __len__(self) -> int:
        raise self._refuse()

    def __repr__(self) -> str:
        return "<ExcludedSession: excluded route>"


class SessionInterface(FlaskSessionInterface):
    """Flask's session interface, answered by a coatcheck `SessionManager`.

    With `fail_open=True`, a store that is down gives an anonymous session that is not
    saved instead of a 503, and a store failure at commit drops the write. `load_failures`
    and `commit_failures` count them; each logs one line per 10 s at most.

    `import_from` carries the sessions of the interface this one replaces over, once, on
    first sight: `"flask"` (Flask's signed cookie, under the app's `SECRET_KEY`),
    `"flask-session-redis"` (Flask-Session's Redis sessions, from its `SESSION_*`
    settings), or that old interface instance itself. The old cookie is the one named by
    `SESSION_COOKIE_NAME`; it may be the name of coatcheck's cookie too (a value that is
    not a coatcheck secret is then tried as the old format). Needs a `Cookie` transport.

    `exclude` lists the paths that have no session (`coatcheck.routes.Exclusions`); views
    marked with `no_session` have none either.
    """

    def __init__(
        self,
        manager: SessionManager,
        *,
        fail_open: bool = False,
        import_from: str | FlaskSessionInterface | Reader | None = None,
        exclude: Iterable[ExcludeSpec] | None = None,
    ) -> None:
        self.manager = manager
        self.exclude = exclusions(exclude)
        #: The endpoints marked `no_session`, per app (read at its first request: Flask
        #: takes no new route after it).
        self._marked: dict[int, frozenset[str]] = {}
        self.fail_open = fail_open
        self.failures = failures.StoreFailures(fail_open)
        self.load_failures, self.commit_failures = self.failures.load, self.failures.commit
        self.import_from = import_from
        self._cookie = next((t for t in manager.transports if isinstance(t, Cookie)), None)
        if import_from is not None and self._cookie is None:
            raise ConfigurationError(
                "import_from needs a Cookie transport to hand the imported session out in"
            )
        self._readers: dict[int, Reader] = {}  # per app (its config names the old store)

    def __repr__(self) -> str:
        return f"SessionInterface({self.manager!r})"

    @classmethod
    def from_flask_config(
        cls,
        app: Flask,
        store: Any = "sqlite:///sessions.db",
        *,
        import_from: str | FlaskSessionInterface | Reader | None = None,
        **options: Any,
    ) -> SessionInterface:
        """An interface whose cookie follows the app's `SESSION_COOKIE_*` settings.

        `store` is a mode (`ServerSide(...)`, `ClientSide(...)`), a store or a store URL;
        `options` go to `SessionManager` (`lifetimes=`, `clock=`, ...). Flask's defaults
        (cookie `session`, not `Secure`) are weaker than coatcheck's: set
        `SESSION_COOKIE_SECURE = True` in production. `import_from` as in the constructor:
        the old cookie then has coatcheck's name, and is replaced by coatcheck's.
        """
        config = app.config
        same_site = config.get("SESSION_COOKIE_SAMESITE")
        cookie = Cookie(
            name=config["SESSION_COOKIE_NAME"],
            path=config.get("SESSION_COOKIE_PATH") or config.get("APPLICATION_ROOT") or "/",
            domain=config.get("SESSION_COOKIE_DOMAIN") or None,
            secure=bool(config.get("SESSION_COOKIE_SECURE")),
            http_only=bool(config.get("SESSION_COOKIE_HTTPONLY", True)),
            same_site=same_site.lower() if same_site else None,
            partitioned=bool(config.get("SESSION_COOKIE_PARTITIONED")),
        )
        mode: Any = ServerSide(store) if isinstance(store, _STORES) else store
        return cls(SessionManager(mode, transport=cookie, **options), import_from=import_from)

    def init_app(self, app: Flask) -> None:
        """Install this interface on `app`, and rotate the ID on Flask-Login's login and
        logout if Flask-Login is installed (see `connect_flask_login`)."""
        app.session_interface = self
        if find_spec("flask_login") is not None:
            connect_flask_login(app)

    def open_session(self, app: Flask, request: Request) -> FlaskSession | ExcludedSession:
        if (self.exclude is not None and self.exclude.excluded(request.path)) or (
            self._has_marks(app) and self._marked_view(app)
        ):
            return ExcludedSession()
        manager = self.manager
        info = request_info(request.environ)
        reader = old = outcome = None
        opener = None
        if self.import_from is not None:
            reader = self._reader(app)
            old = request.cookies.get(reader.cookie_name(app)) or None
            cookie = self._cookie
            if old is not None and cookie is not None and reader.cookie_name(app) == cookie.name:
                # One cookie name for both: a value that is no coatcheck secret is tried as
                # the old format first; if it is not one either, coatcheck's own checks
                # reject (and log, and clear) it as they would any bad cookie.
                if not is_wellformed(old):
                    outcome = reader.read(app, old)
                    if isinstance(outcome, Imported):
                        opener = _opening_nothing(manager)
                old = None  # (tried, or coatcheck's: not again below)
        try:
            session = open_session(manager, info, opener=opener)
        except StoreError as exc:
            if not self.failures.at_load(manager, exc):
                _refuse(request, ServiceUnavailable("The session store is unreachable."))
            return FlaskSession(manager.anonymous(info), saved=False)
        refused = False
        if manager.csrf:
            try:
                check_csrf(manager, info, session, request.environ)
            except CSRFError:
                _refuse(request, Forbidden("Cross-origin request rejected (CSRF)."))
                refused = True
        current = FlaskSession(session)
        if reader is not None and session.is_new and not refused:
            if old is not None:
                outcome = reader.read(app, old)
                if isinstance(outcome, Rejected):
                    detail = f"from={reader.source} reason={outcome.reason}"
                    manager.audit.security("session.import_rejected", old, detail)
            if isinstance(outcome, Imported):
                _carry_over(session, outcome)
                current._imported = outcome
            # The old cookie is cleared, unless it is coatcheck's own (its `Set-Cookie`
            # replaces it) or the old store could not be asked (it may verify next time).
            clear = isinstance(outcome, Imported) or (outcome is not None and outcome.clear)
            if clear and not self._shares_cookie(app, reader):
                current._clear_old = _old_cookie(app, reader)
        return current

    def _has_marks(self, app: Flask) -> bool:
        marked = self._marked.get(id(app))
        if marked is None:
            views = app.view_functions.items()
            marked = frozenset(name for name, view in views if is_marked(view))
            self._marked[id(app)] = marked
        return bool(marked)

    def _marked_view(self, app: Flask) -> bool:
        """Whether the request's URL goes to a view marked `no_session` (Flask matches it
        only after opening the session: matched here, once more)."""
        adapter = request_ctx.url_adapter
        if adapter is None:
            return False
        try:
            rule, _ = adapter.match(return_rule=True)
        except HTTPException:  # 404, 405, a redirect: no view of ours runs
            return False
        return rule.endpoint in self._marked[id(app)]

    def _reader(self, app: Flask) -> Reader:
        reader = self._readers.get(id(app))
        if reader is None:
            reader = self._readers[id(app)] = reader_for(self.import_from, app)
        return reader

    def _shares_cookie(self, app: Flask, reader: Reader) -> bool:
        """Whether the old cookie is coatcheck's own (same name, path and domain): then
        coatcheck's `Set-Cookie` replaces it, and clearing it would erase the new one."""
        cookie = self._cookie
        return cookie is not None and _old_cookie(app, reader)[:3] == (
            cookie.name,
            cookie.path,
            cookie.domain,
        )

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, FlaskSession) or not session._saved:
            return
        manager, coatcheck = self.manager, session.coatcheck
        saved = True
        try:
            extra = commit_session(manager, coatcheck)
        except failures.COMMIT_FAILURES as exc:
            answer = self.failures.at_commit(manager, coatcheck, exc)
            if answer is not None:
                _replace(response, answer)
                return
            extra = failures.unsaved_headers(manager, coatcheck)
            saved = False
        imported = session._imported
        if imported is not None and saved:
            self._finish_import(imported, coatcheck)
        if extra:
            merged = merge_headers(response.headers.to_wsgi_list(), title_case(extra))
            response.headers.clear()
            response.headers.extend(merged)
        if session._clear_old is not None and (imported is None or saved):
            # (An import that was not saved keeps the old cookie: the next request retries.)
            name, path, domain, secure = session._clear_old
            response.delete_cookie(name, path=path, domain=domain, secure=secure)

    def _finish_import(self, imported: Imported, session: Session) -> None:
        """The coatcheck session is saved: delete the old one and log the import (the
        new session by its hash; the keys left behind by name, never their values)."""
        manager = self.manager
        try:
            imported.delete()
        except Exception as exc:  # the old store: the session expires there on its own
            manager.audit.error("session.import_delete_failed", session.id, type(exc).__name__)
        detail = f"from={imported.source} user={'yes' if imported.user is not None else 'no'}"
        if imported.dropped:
            detail += f" dropped={','.join(imported.dropped)}"
        manager.audit.lifecycle("session.imported", session.id, detail)


def _opening_nothing(manager: SessionManager) -> Any:
    """An opener for `open_session` that reads no secret: the request's cookie was an old
    session, imported into a fresh coatcheck one."""
    return lambda info: manager.open(info, "")


def _old_cookie(app: Flask, reader: Reader) -> tuple[str, str, str | None, bool]:
    """The old cookie's name, path, domain and `Secure` flag, as the old interface reads
    them from `app.config` (a `__Host-` or `__Secure-` name is cleared only with `Secure`)."""
    return (
        reader.cookie_name(app),
        reader.cookie_path(app),
        reader.cookie_domain(app) or None,
        reader.interface.get_cookie_secure(app),
    )


def _carry_over(session: Session, imported: Imported) -> None:
    """Put an old session's data into the fresh coatcheck `session`, bind Flask-Login's
    user as `connect_flask_login` does at a login, and keep it permanent if it was."""
    session.update(imported.data)
    if imported.persistent:
        session.set_persistent(True)
    if imported.user is not None:
        session.login(imported.user)


def _refuse(request: Request, error: HTTPException) -> None:
    """Make Flask raise `error` where it would raise a routing error: after the session is
    open and before the view runs, through the application's error handlers."""
    if request.routing_exception is None:
        request.routing_exception = error


def _replace(response: Response, answer: Answer) -> None:
    """Turn the view's response into `answer`: its status, body and headers (the view's
    cookies included: none of what it answered is sent)."""
    response.status_code = answer.status
    response.headers.clear()
    response.set_data(answer.body)
    for name, value in answer.headers():
        response.headers[name] = value


# -- recent login and assurance level ----------------------------------------------------

_View = TypeVar("_View", bound=Callable[..., Any])


def recent_login_required(
    max_age: float | None = None,
    assurance: str | None = None,
    *,
    ladder: Ladder = DEFAULT_LADDER,
) -> Callable[[_View], _View]:
    """A view decorator: the view runs only if the session's user authenticated at most
    `max_age` seconds ago, at level `assurance` or above on `ladder` (either may be None:
    any). Otherwise the answer is `401 Unauthorized` with the RFC 9470 challenge and the
    JSON body of `StepUpRequired` (`reason`: `"login_required"`, `"login_too_old"` or
    `"assurance_too_low"`); the session is saved as for any response, so the 401 carries
    its `Vary` and `Cache-Control`. The requirement is checked when the view is decorated
    (`ConfigurationError`). Sync and async views alike."""
    requirement = Requirement.of(max_age, assurance, ladder)

    def decorate(view: _View) -> _View:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                refusal = _unmet(requirement)
                return refusal if refusal is not None else await view(*args, **kwargs)

            return guarded_async  # type: ignore[return-value]

        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            refusal = _unmet(requirement)
            return refusal if refusal is not None else view(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate


def _unmet(requirement: Requirement) -> Response | None:
    """The 401 for the current request's session if it fails `requirement`, else None."""
    session = current_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(session, FlaskSession):
        raise ConfigurationError(
            "recent_login_required needs coatcheck's SessionInterface(manager).init_app(app)"
        )
    answer = failures.unmet(requirement, session.coatcheck)
    if answer is None:
        return None
    response = Response(answer.body, status=answer.status)
    for name, value in answer.headers():
        response.headers[name] = value
    return response


# -- Flask-Login -------------------------------------------------------------------------


def connect_flask_login(app: Flask) -> None:
    """Make Flask-Login's `login_user` and `logout_user` rotate the session ID.

    Flask-Login only writes `_user_id` into the session; session fixation needs the ID to
    change when the user changes. On `user_logged_in` this calls `session.login(user_id)`
    (new ID, the old one dead at once, the user indexed for listing and revocation); on
    `user_logged_out` it unbinds the user and regenerates the ID, keeping the rest of the
    session as Flask-Login expects (it still has to clear its remember-me cookie).
    """
    import flask_login  # type: ignore[import-untyped]  # ships no type hints

    flask_login.user_logged_in.connect(_on_login, app)
    flask_login.user_logged_out.connect(_on_logout, app)


def _current() -> Session | None:
    # `flask.session` is typed as the session, but is a LocalProxy in front of it.
    session = current_session._get_current_object()  # type: ignore[attr-defined]
    return session.coatcheck if isinstance(session, FlaskSession) else None


def _on_login(sender: Flask, user: Any, **extra: Any) -> None:
    session = _current()
    if session is not None:
        session.login(str(user.get_id()))


def _on_logout(sender: Flask, user: Any, **extra: Any) -> None:
    session = _current()
    if session is not None and session.user is not None:
        session.unbind_user()
        session.regenerate()
