"""`coatcheck.adapters.wsgi.SessionMiddleware` around plain WSGI apps, driven by werkzeug's
test client at `https://localhost` (so `Secure` cookies flow as in a browser)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client, EnvironBuilder, TestResponse

from coatcheck import ClientSide, KeyRing, SessionManager
from coatcheck.adapters.wsgi import ENVIRON_KEY, SessionMiddleware, request_info
from coatcheck.exceptions import StoreUnavailable
from coatcheck.ids import handle_of
from coatcheck.session import Session
from coatcheck.stores import MemoryStore, SQLiteStore
from coatcheck.stores.base import Record, Store
from helpers import COOKIE, CountingStore, FakeClock, manager_for

BASE = "https://localhost"
StartResponse = Any


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Sets `?key=...&value=...`, reads with `?read=1`; answers the session as JSON."""
    session: Session = environ[ENVIRON_KEY]
    query = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    if "key" in query:
        session[query["key"]] = query.get("value", "")
    body = b"untouched"
    if "read" in query or "key" in query:
        body = json.dumps(dict(session)).encode()
    if environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
    headers = [
        ("Content-Type", "application/json"),
        ("Vary", "Accept-Encoding"),
        ("Cache-Control", "max-age=60"),
    ]
    start_response("200 OK", headers)
    return [body]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> Iterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore(clock=clock)
    else:
        backend = SQLiteStore(tmp_path / "sessions.db", clock=clock)
    yield backend
    backend.close()


@pytest.fixture
def manager(store: Store, clock: FakeClock) -> SessionManager:
    return manager_for(store, clock)


@pytest.fixture
def client(manager: SessionManager) -> Client:
    return Client(SessionMiddleware(app, manager))


def get(client: Client, path: str, **kwargs: Any) -> TestResponse:
    return client.get(path, base_url=BASE, **kwargs)


def secret_of(response: TestResponse) -> str | None:
    for header in response.headers.getlist("Set-Cookie"):
        if header.startswith(f"{COOKIE}="):
            return header.split(";", 1)[0].split("=", 1)[1]
    return None


def test_round_trip(client: Client, store: Store) -> None:
    response = get(client, "/?key=a&value=1")
    secret = secret_of(response)
    assert secret and store.load(handle_of(secret)) is not None
    assert response.headers["Set-Cookie"].endswith("; Path=/; HttpOnly; Secure; SameSite=Lax")
    assert json.loads(get(client, "/?read=1").data) == {"a": "1"}


def test_headers_are_merged(client: Client) -> None:
    first = get(client, "/?key=a")
    assert first.headers["Vary"] == "Accept-Encoding, Cookie"
    assert first.headers.getlist("Cache-Control") == ["no-store"]
    read = get(client, "/?read=1")
    assert read.headers["Vary"] == "Accept-Encoding, Cookie"
    assert read.headers["Cache-Control"] == "max-age=60" and "Set-Cookie" not in read.headers
    untouched = get(client, "/")
    assert untouched.headers["Vary"] == "Accept-Encoding"


def test_nothing_written_when_nothing_changed(clock: FakeClock) -> None:
    counting = CountingStore(clock=clock)
    client = Client(SessionMiddleware(app, manager_for(counting, clock)))
    get(client, "/?key=a")
    get(client, "/?read=1")
    get(client, "/")
    assert counting.saves == 1


def test_cross_origin_post_is_403_and_token_form_passes_with_full_body(client: Client) -> None:
    get(client, "/?key=a")
    cross = {"Origin": "https://evil.example"}
    refused = client.post("/?key=a&value=evil", base_url=BASE, headers=cross)
    assert refused.status_code == 403
    assert json.loads(get(client, "/?read=1").data) == {"a": ""}

    def token_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        token: str = environ[ENVIRON_KEY].csrf_token
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [token.encode()]

    manager = client.application.manager  # type: ignore[attr-defined]  # our middleware
    tokens = Client(SessionMiddleware(token_app, manager))
    token = tokens.get("/", base_url=BASE).get_data(as_text=True)
    posting = Client(SessionMiddleware(app, manager))
    cookie = tokens.get_cookie(COOKIE, domain="localhost")
    assert cookie is not None
    posting.set_cookie(COOKIE, cookie.value, domain="localhost")
    body = f"csrf_token={token}&name=ada"
    ok = posting.post(
        "/",
        base_url=BASE,
        headers=cross,
        data=body,
        content_type="application/x-www-form-urlencoded",
    )
    assert ok.status_code == 200 and ok.get_data(as_text=True) == body
    bad = posting.post(
        "/",
        base_url=BASE,
        headers=cross,
        data="csrf_token=nope",
        content_type="application/x-www-form-urlencoded",
    )
    assert bad.status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        b"csrf_token=wrong&a=1",
        b"a=1",
        b"&".join(b"f%d=1" % i for i in range(2000)) + b"&csrf_token=x",
        b"csrf_token=x&" + b"&".join(b"f%d=1" % i for i in range(2000)),
        b"csrf_token=%ff%fe&a=\xff",
        b"a=" + b"x" * (1024 * 1024 + 10),
    ],
    ids=[
        "wrong-token",
        "no-token",
        "too-many-fields",
        "too-many-fields-token-first",
        "not-utf8",
        "too-large",
    ],
)
def test_cross_origin_bad_form_is_403_never_500(client: Client, body: bytes) -> None:
    # The same forms as tests/adapters/test_asgi.py's test_csrf_bad_form_is_403: every
    # adapter searches a form with coatcheck.csrf.form_token, so all answer alike.
    get(client, "/?key=a")
    response = client.post(
        "/?key=a&value=evil",
        base_url=BASE,
        data=body,
        headers={"Origin": "https://evil.example"},
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 403
    assert json.loads(get(client, "/?read=1").data) == {"a": ""}


class FlakyStore(MemoryStore):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.down = False

    def load(self, key: str) -> Record | None:
        if self.down:
            raise StoreUnavailable("store unreachable (test)")
        return super().load(key)

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        if self.down:
            raise StoreUnavailable("store unreachable (test)")
        return super().save(key, data, version=version, ttl=ttl, user=user)


@pytest.mark.parametrize("fail_open", [False, True])
def test_store_down_on_open(clock: FakeClock, fail_open: bool) -> None:
    flaky = FlakyStore(clock=clock)
    client = Client(SessionMiddleware(app, manager_for(flaky, clock), fail_open=fail_open))
    get(client, "/?key=a&value=1")
    flaky.down = True
    response = get(client, "/?read=1")
    if fail_open:
        assert response.status_code == 200 and json.loads(response.data) == {}
    else:
        assert response.status_code == 503 and b"unreachable" in response.data
    assert secret_of(response) is None


class Body:
    """A response body that records whether the server closed it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("lazy", [False, True])
def test_store_failing_on_commit_gives_503_and_closes_the_body(
    clock: FakeClock, lazy: bool
) -> None:
    flaky = FlakyStore(clock=clock)
    flaky.down = True
    bodies: list[Body] = []

    def writer(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ[ENVIRON_KEY]["a"] = 1
        body = Body([b"secret ", b"page"])
        bodies.append(body)
        if not lazy:
            start_response("200 OK", [("Content-Type", "text/html")])
            return body

        def generate() -> Iterator[bytes]:
            start_response("200 OK", [("Content-Type", "text/html")])
            yield from body

        return generate()

    response = Client(SessionMiddleware(writer, manager_for(flaky, clock))).get("/", base_url=BASE)
    assert response.status_code == 503
    assert response.data == b"Service Unavailable: session not saved"
    assert secret_of(response) is None
    response.close()
    if not lazy:
        assert bodies[0].closed


def test_streaming_body_passes_through_and_is_closed(manager: SessionManager) -> None:
    bodies: list[Body] = []

    def streamer(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ[ENVIRON_KEY]["a"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        bodies.append(Body([b"one ", b"two ", b"three"]))
        return bodies[0]

    response = Client(SessionMiddleware(streamer, manager)).get("/", base_url=BASE)
    assert response.data == b"one two three" and secret_of(response)
    response.close()
    assert bodies[0].closed


@pytest.mark.parametrize(
    ("builder", "expected"),
    [
        (
            {
                "path": "/a/b",
                "base_url": "https://example.com:8443/root",
                "method": "post",
                "headers": {"User-Agent": "ua", "X-Forwarded-For": "x"},
            },
            {
                "method": "POST",
                "scheme": "https",
                "host": "example.com:8443",
                "path": "/root/a/b",
                "user-agent": "ua",
                "x-forwarded-for": "x",
            },
        ),
        (
            {
                "path": "/",
                "base_url": "http://localhost",
                "data": "a=1",
                "method": "POST",
                "content_type": "application/x-www-form-urlencoded",
            },
            {
                "method": "POST",
                "scheme": "http",
                "host": "localhost",
                "path": "/",
                "content-type": "application/x-www-form-urlencoded",
                "content-length": "3",
            },
        ),
    ],
)
def test_request_info(builder: dict[str, Any], expected: dict[str, str]) -> None:
    environ = EnvironBuilder(**builder).get_environ()
    environ["REMOTE_ADDR"] = "192.0.2.7"
    info = request_info(environ)
    assert info.method == expected.pop("method")
    assert info.scheme == expected.pop("scheme")
    assert info.host == expected.pop("host")
    assert info.path == expected.pop("path")
    assert info.client_ip == "192.0.2.7"
    for name, value in expected.items():
        assert info.header(name) == value


def test_request_info_without_host_header() -> None:
    environ = {
        "REQUEST_METHOD": "GET",
        "SERVER_NAME": "internal",
        "SERVER_PORT": "8080",
        "wsgi.url_scheme": "http",
        "PATH_INFO": "",
    }
    info = request_info(environ)
    assert (info.host, info.path, info.client_ip) == ("internal:8080", "/", None)


def test_a_second_start_response_commits_nothing_more(clock: FakeClock) -> None:
    """An app that replaces its response with an error page (PEP 3333: `exc_info`) gets
    the session's headers again, from the one commit."""
    counting = CountingStore(clock=clock)

    def failing(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ[ENVIRON_KEY]["a"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("late failure")
        except RuntimeError:
            import sys

            start_response(
                "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"error page"]

    calls: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        calls.append((status, headers))  # headers not sent yet: a server accepts the change
        return lambda data: None

    environ = EnvironBuilder(path="/", base_url=BASE).get_environ()
    middleware = SessionMiddleware(failing, manager_for(counting, clock))
    body = middleware(environ, start_response)
    assert b"".join(body) == b"error page"
    assert [status for status, _ in calls] == ["200 OK", "500 Internal Server Error"]
    cookies = [[v for k, v in headers if k == "Set-Cookie"] for _, headers in calls]
    assert len(cookies[0]) == 1 and cookies[0] == cookies[1]
    assert counting.saves == 1


def test_client_side_mode_through_the_same_middleware(clock: FakeClock) -> None:
    manager = SessionManager(ClientSide(KeyRing.generate(), store=None), clock=clock)
    client = Client(SessionMiddleware(app, manager))
    response = get(client, "/?key=a&value=1")
    token = secret_of(response)
    assert token is not None and token.count(".") == 2  # the session itself, signed
    assert json.loads(get(client, "/?read=1").data) == {"a": "1"}


@pytest.mark.parametrize("length", ["abc", "-5", "+3", "9" * 5000, "", str(1024 * 1024 + 1)])
def test_cross_origin_form_with_a_bad_content_length_is_403(
    manager: SessionManager, length: str
) -> None:
    """A `Content-Length` that is not a plain number in range: the form is not read (no
    token, a 403), and nothing raises on the way (no 500)."""
    environ = EnvironBuilder(
        path="/",
        base_url=BASE,
        method="POST",
        data=b"csrf_token=x",
        headers=[("Origin", "https://evil.example")],
        content_type="application/x-www-form-urlencoded",
    ).get_environ()
    environ["CONTENT_LENGTH"] = length
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    body = SessionMiddleware(app, manager)(environ, start_response)
    assert statuses == ["403 Forbidden"] and b"".join(body).startswith(b"Forbidden")
