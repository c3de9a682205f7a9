"""The least a session layer with coatcheck's security defaults must do, written by hand.

Two pure ASGI middlewares for `bench/e2e_app.py` (`E2E_IMPL=minimal-server`,
`minimal-client`): not a library, a measuring stick. Each does, per request, only what
issue 13 says must stay (256-bit IDs from the CSPRNG, the ID hashed at rest, the idle and
absolute deadlines checked on the server, `Vary: Cookie` and `Cache-Control: no-store`,
the cookie's attributes) and nothing a library adds beyond that: no CAS or merge of
concurrent writes, no renewal, no CSRF state, no revocation, no listing, no logging, no
configuration, no error handling. Whatever coatcheck costs above these is its features;
what these cost above the bare app is the floor for any layer with the same defaults.

- `MinimalServer`: a dict of SHA-256(secret) -> orjson record; the cookie carries a
  256-bit secret (`secrets.token_urlsafe(32)`). `Cache-Control: no-store` goes with a
  `Set-Cookie`, `Vary: Cookie` on every response, as coatcheck sends them.
- `MinimalClient`: an HS256 JWS (`{"alg":"HS256","kid":...}`) of the same claims as
  coatcheck's (`sid`, `iat`, `exp`, `idl`, `rot`, `dat`), verified in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any

import orjson

IDLE, ABSOLUTE = 30 * 60, 12 * 60 * 60
COOKIE = b"__Host-session"
ATTRIBUTES = b"; HttpOnly; Path=/; SameSite=lax; Secure"
SENT = [(b"cache-control", b"no-store"), (b"vary", b"Cookie")]


class Tracked(dict[str, Any]):
    """The session's data; remembers whether the view wrote to it."""

    __slots__ = ("written",)

    def __setitem__(self, key: str, value: Any) -> None:
        self.written = True
        super().__setitem__(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.written = True
        super().update(*args, **kwargs)


def presented(scope: Any) -> bytes | None:
    """The session cookie's value in the request, if any."""
    for name, value in scope["headers"]:
        if name == b"cookie":
            for part in value.split(b";"):
                key, _, found = part.strip().partition(b"=")
                if key == COOKIE:
                    return found
    return None


class MinimalServer:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.records: dict[bytes, bytes] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        now = time.time()
        secret = presented(scope)
        key = record = None
        if secret is not None and len(secret) == 43:
            key = hashlib.sha256(secret).digest()
            raw = self.records.get(key)
            if raw is not None:
                record = orjson.loads(raw)
                if now - record["c"] >= ABSOLUTE or now - record["s"] >= IDLE:
                    record = None
        data = Tracked() if record is None else Tracked(record["d"])
        data.written = False
        scope["session"] = data

        async def send_session(message: Any) -> None:
            nonlocal secret, key
            if message["type"] == "http.response.start":
                headers = message["headers"] = list(message["headers"])
                if data.written:
                    created = now if record is None else record["c"]
                    if record is None:
                        secret = secrets.token_urlsafe(32).encode()
                        key = hashlib.sha256(secret).digest()
                        headers.append((b"set-cookie", COOKIE + b"=" + secret + ATTRIBUTES))
                        headers += SENT
                    else:
                        headers.append(SENT[1])
                    assert key is not None
                    self.records[key] = orjson.dumps({"d": data, "c": created, "s": now})
                else:
                    headers.append(SENT[1])
            await send(message)

        await self.app(scope, receive, send_session)


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


class MinimalClient:
    def __init__(self, app: Any, key: bytes, kid: str) -> None:
        self.app = app
        self.key = key
        self.header = _b64(orjson.dumps({"alg": "HS256", "kid": kid}))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        now = time.time()
        token = presented(scope)
        claims = None
        if token is not None:
            signed, _, mac = token.rpartition(b".")
            header, _, payload = signed.partition(b".")
            if header == self.header and hmac.compare_digest(
                _unb64(mac), hmac.digest(self.key, signed, "sha256")
            ):
                claims = orjson.loads(_unb64(payload))
                if now >= claims["exp"] or now >= claims["idl"]:
                    claims = None
        data = Tracked() if claims is None else Tracked(claims["dat"])
        data.written = False
        scope["session"] = data

        async def send_session(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = message["headers"] = list(message["headers"])
                if data.written:
                    created = now if claims is None else claims["iat"]
                    body = {
                        "sid": secrets.token_urlsafe(16) if claims is None else claims["sid"],
                        "iat": created,
                        "exp": int(created + ABSOLUTE),
                        "idl": int(now + IDLE),
                        "rot": int(now),
                        "dat": data,
                    }
                    signed = self.header + b"." + _b64(orjson.dumps(body))
                    mac = _b64(hmac.digest(self.key, signed, "sha256"))
                    token = signed + b"." + mac
                    headers.append((b"set-cookie", COOKIE + b"=" + token + ATTRIBUTES))
                    headers += SENT
                else:
                    headers.append(SENT[1])
            await send(message)

        await self.app(scope, receive, send_session)
