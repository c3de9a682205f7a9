"""Per-route opt-out: the routes that have no session at all.

A health check or a static file should cost what the bare application costs: no session
loaded, no store touched, no token verified, and no `Set-Cookie`, `Vary: Cookie` or
`Cache-Control` added to its response. Every adapter takes `exclude=[...]`, a list of
what `Exclusions` reads:

- a `str` ending in `/` is a prefix (`"/static/"`: `/static/app.css`, not `/static`);
- any other `str` is an exact path (`"/healthz"`: not `/healthz/`, not `/healthz/x`);
- an `re.Pattern` is searched in the path (`re.compile(r"^/assets/.*\\.js$")`: anchor it);
- a callable takes the path and returns whether it is excluded (it must not raise).

The path is the one the application routes on, without the query string and without the
prefix it is mounted under (ASGI `root_path`, WSGI `SCRIPT_NAME`), percent-decoded.
Specs are checked once, at construction (`ConfigurationError`): a path must start with
`/`, `"/"` alone (every route) is refused, and so are `*` and `?` (not glob, not query).

Routes can also be marked where they are defined, with `no_session` on the endpoint or
view (see each adapter). Excluding too much never grants anything: an excluded route has
no session, so it sees no user, and it cannot write one. It also gets no CSRF check from
coatcheck (there is no session to ride on). Where its session would be, it finds
`NO_SESSION`, on which any use raises `SessionExcluded` (a programming error, a 500):
never an empty session whose writes are silently dropped.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn, TypeVar, Union

from .exceptions import ConfigurationError, SessionExcluded

__all__ = [
    "MARK",
    "NO_SESSION",
    "ExcludeSpec",
    "Exclusions",
    "NoSession",
    "RouteFilter",
    "exclusions",
    "is_marked",
    "no_session",
    "route_path",
]

#: One entry of `exclude=[...]`.
ExcludeSpec = Union[str, "re.Pattern[str]", Callable[[str], bool]]

#: The attribute `no_session` sets on a view.
MARK = "__coatcheck_no_session__"

V = TypeVar("V")


def no_session(view: V) -> V:
    """Mark `view` (a function, an endpoint class, a mounted ASGI app) as a route that has
    no session; the view itself is returned unchanged, so it goes above or below the
    framework's route decorator alike. Django wraps the view instead:
    `coatcheck.adapters.django.no_session`."""
    setattr(view, MARK, True)
    return view


def is_marked(view: object) -> bool:
    """Whether `no_session` marked `view` (or the class of a class-based view)."""
    if getattr(view, MARK, False) is True:
        return True
    return getattr(getattr(view, "view_class", None), MARK, False) is True


_EXCLUDED = (
    "this route is excluded from sessions (exclude=[...] or @no_session), so it has no "
    "session: remove it from the exclusions to use the session here"
)


class NoSession:
    """What an excluded route finds where its session would be (`scope["session"]`,
    `environ["coatcheck.session"]`, Django's `request.session`): any use of it raises
    `SessionExcluded`, which is an `AttributeError` too, so code that probes for a session
    with `getattr(..., None)` or `hasattr` (Django's own session middleware) sees none."""

    __slots__ = ()

    def refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Raise `SessionExcluded`."""
        raise SessionExcluded(_EXCLUDED)

    def __getattr__(self, name: str) -> NoReturn:
        raise SessionExcluded(_EXCLUDED)

    def __getitem__(self, key: str) -> NoReturn:
        self.refuse()

    def __setitem__(self, key: str, value: Any) -> NoReturn:
        self.refuse()

    def __delitem__(self, key: str) -> NoReturn:
        self.refuse()

    def __contains__(self, key: object) -> NoReturn:
        self.refuse()

    def __iter__(self) -> Iterator[str]:
        self.refuse()

    def __len__(self) -> NoReturn:
        self.refuse()

    def __bool__(self) -> NoReturn:
        self.refuse()

    def __repr__(self) -> str:
        return "<NoSession: excluded route>"


#: The one `NoSession`.
NO_SESSION = NoSession()


class Exclusions:
    """The excluded paths of one adapter, checked once; `excluded(path)` is the test."""

    __slots__ = ("exact", "patterns", "prefixes", "specs", "tests")

    def __init__(self, specs: Iterable[ExcludeSpec]) -> None:
        if isinstance(specs, (str, bytes, re.Pattern)) or callable(specs):
            raise ConfigurationError(
                f"exclude is a list of paths, patterns or callables, not one: exclude=[{specs!r}]"
            )
        exact: set[str] = set()
        prefixes: list[str] = []
        patterns: list[re.Pattern[str]] = []
        tests: list[Callable[[str], bool]] = []
        kept: list[ExcludeSpec] = []
        for spec in specs:
            if isinstance(spec, str):
                _check_path(spec)
                (prefixes.append if spec.endswith("/") else exact.add)(spec)
            elif isinstance(spec, re.Pattern):
                if not isinstance(spec.pattern, str):
                    raise ConfigurationError(
                        f"exclude pattern {spec.pattern!r} is bytes: paths are str, "
                        "compile a str pattern"
                    )
                patterns.append(spec)
            elif callable(spec):
                tests.append(spec)
            else:
                raise ConfigurationError(
                    "exclude entries are paths (str: '/healthz', or a prefix ending in "
                    "'/': '/static/'), re.compile(...) patterns, or callables taking the "
                    f"path; not {type(spec).__name__}"
                )
            kept.append(spec)
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self.patterns = tuple(patterns)
        self.tests = tuple(tests)
        self.specs = tuple(kept)

    def __bool__(self) -> bool:
        return bool(self.specs)

    def excluded(self, path: str) -> bool:
        """Whether the route at `path` has no session."""
        if path in self.exact or path.startswith(self.prefixes):
            return True
        for pattern in self.patterns:
            if pattern.search(path) is not None:
                return True
        for test in self.tests:
            if test(path):
                return True
        return False

    def __repr__(self) -> str:
        return f"Exclusions({list(self.specs)!r})"


def _check_path(spec: str) -> None:
    if not spec.startswith("/"):
        raise ConfigurationError(
            f"exclude path {spec!r} must start with '/' (it is matched against the path "
            "the application routes on)"
        )
    if spec == "/":
        raise ConfigurationError(
            "exclude path '/' would exclude every route: remove the session middleware "
            "instead, or list the routes"
        )
    if "*" in spec or "?" in spec:
        raise ConfigurationError(
            f"exclude path {spec!r}: paths are exact, or prefixes ending in '/', matched "
            "without the query string; for a wildcard use re.compile(...)"
        )


def exclusions(specs: Iterable[ExcludeSpec] | None) -> Exclusions | None:
    """`Exclusions(specs)`, or None when there are none (the adapters then test nothing)."""
    if specs is None:
        return None
    found = Exclusions(specs)
    return found if found else None


def route_path(scope: Any) -> str:
    """The path an ASGI app routes on: `scope["path"]` without `root_path` (as Starlette's
    `get_route_path`)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


class RouteFilter:
    """The routes an ASGI middleware leaves alone: `exclude` paths, and the routes marked
    with `no_session` in the app's router (Starlette, FastAPI), collected at the first
    request (routes added after it are not seen).

    `active` is False once the first request has shown there is nothing to test: the
    middleware then skips the call altogether. A marked route costs other requests one
    regular-expression match (its path's, or its mount's); only a request that matches it
    pays for `Route.matches` and for checking that no route before it takes the request.
    """

    def __init__(self, exclude: Iterable[ExcludeSpec] | None) -> None:
        self.paths = exclusions(exclude)
        self.active = True
        #: Per marked route: a pattern its path must match (None: no cheap test), the
        #: routes that must match in full (its mounts, then itself), and the top-level
        #: routes before it (None: it is mounted, Starlette's routing is followed).
        self.tests: tuple[tuple[Any, tuple[Any, ...], tuple[Any, ...] | None], ...] | None
        self.tests = None
        self.routes: list[Any] = []
        self._full: Any = None
        self._partial: Any = None

    def excluded(self, scope: Any, app: Any) -> bool:
        """Whether the request of `scope` has no session (`app`: the wrapped app, for a
        router if the scope names none)."""
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root:
            path = route_path(scope)  # (inlined: the test runs on every request)
        paths = self.paths
        if paths is not None and paths.excluded(path):
            return True
        tests = self.tests
        if tests is None:
            self._collect(scope.get("app") or app)
            self.active = paths is not None or bool(self.tests)
            tests = self.tests
        return bool(tests) and self._marked_route(scope, path)

    def _collect(self, app: Any) -> None:
        routes = getattr(app, "routes", None)
        if not isinstance(routes, list):
            self.tests = ()
            return
        marked: list[tuple[Any, ...]] = []
        _find_marked(routes, (), marked)
        tests = []
        for chain in marked:
            *above, route = chain
            mounts = [r for r in above if isinstance(r, _starlette_types()[:2])]
            if above and not mounts:  # only FastAPI's included routers: the route's own
                regex = getattr(route, "path_regex", None)  # pattern has their prefix
            else:
                regex = getattr(chain[0], "path_regex", None)
            before = None if above else tuple(routes[: routes.index(route)])
            tests.append((regex, (*mounts, route), before))
        self.tests = tuple(tests)
        if tests:
            from starlette.routing import Match  # a router with routes: Starlette's

            self._full, self._partial = Match.FULL, Match.PARTIAL
            self.routes = routes

    def _marked_route(self, scope: Any, path: str) -> bool:
        """Whether the route Starlette will pick is marked: the marked routes are tested
        in order; the first that matches in full is the request's unless a route before it
        matches in full too."""
        full = self._full
        for regex, chain, before in self.tests or ():
            if regex is not None and regex.match(path) is None:
                continue
            if before is not None:  # a top-level route, whose pattern matched
                if not _takes(chain[0], scope, path, full):
                    continue
                for route in before:
                    if _takes(route, scope, path, full):
                        return False
                return True
            current = scope
            for route in chain:
                match, child = route.matches(current)
                if match is not full:
                    break
                current = {**current, **child}
            else:
                return _marked(_pick(self.routes, scope, full, self._partial))
        return False


def _takes(route: Any, scope: Any, path: str, full: Any) -> bool:
    """Whether `route` matches `scope` in full: its pattern first, when it has one; for a
    plain HTTP `Route`, its methods (what `Route.matches` checks, without building the
    child scope)."""
    regex = getattr(route, "path_regex", None)
    if regex is not None and regex.match(path) is None:
        return False
    if isinstance(route, _starlette_types()[2]) and scope["type"] == "http":
        methods = getattr(route, "methods", None)
        return not methods or scope["method"] in methods
    return route.matches(scope)[0] is full


@functools.cache
def _starlette_types() -> tuple[type, ...]:
    from starlette.routing import Host, Mount, Route  # only asked of a router with routes

    return (Mount, Host, Route)


def _routes_of(route: Any) -> list[Any] | None:
    """The routes under a `Mount` or `Host`, or under a router FastAPI included
    (`include_router`: a route whose `effective_candidates()` are the included routes,
    prefixed); None for a leaf route, or a mounted app that is no router."""
    if isinstance(route, _starlette_types()[:2]):
        routes = getattr(route, "routes", None)
        return routes if isinstance(routes, list) else None
    candidates = getattr(route, "effective_candidates", None)
    if callable(candidates) and hasattr(route, "original_router"):
        included = candidates()
        return included if isinstance(included, list) else None
    return None


def _marked(route: Any) -> bool:
    if route is None:
        return False
    return (
        is_marked(getattr(route, "endpoint", None))
        or is_marked(getattr(route, "_base_app", None))
        or is_marked(getattr(route, "app", None))
    )


def _find_marked(routes: list[Any], above: tuple[Any, ...], into: list[tuple[Any, ...]]) -> None:
    for route in routes:
        if _marked(route):
            into.append((*above, route))
            continue
        inner = _routes_of(route)
        if inner:
            _find_marked(inner, (*above, route), into)


def _pick(routes: list[Any], scope: Any, full: Any, partial_match: Any) -> Any:
    """The route Starlette's `Router` hands `scope` to (descending into mounts, stopping
    at a marked one), or None."""
    partial = None
    partial_scope: Any = None
    for route in routes:
        match, child = route.matches(scope)
        if match is full:
            return _inside(route, {**scope, **child}, full, partial_match)
        if match is partial_match and partial is None:
            partial, partial_scope = route, {**scope, **child}
    if partial is not None:
        return _inside(partial, partial_scope, full, partial_match)
    return None


def _inside(route: Any, scope: Any, full: Any, partial_match: Any) -> Any:
    if _marked(route):
        return route
    inner = _routes_of(route)
    return route if inner is None else _pick(inner, scope, full, partial_match)
