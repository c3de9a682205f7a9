"""EdDSA and ES256 client-side tokens: keys in the ring, the codec's refusals (the same as
HS256's, plus algorithm confusion), interop with PyJWT and jwcrypto both ways, sessions
through real HTTP (ASGI and WSGI) with login, renewal, key rotation and revocation, and the
public JWK set the middleware serves."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws
from jwcrypto import jwt as jwcrypto_jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from coatcheck import Lifetimes, SessionAdmin, SessionManager
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.adapters.wsgi import SessionMiddleware as WSGISessionMiddleware
from coatcheck.asymmetric import (
    AsymmetricJWSCodec,
    generate_signing_key,
    thumbprint,
)
from coatcheck.clientside import ClientSide
from coatcheck.exceptions import ConfigurationError, InvalidToken
from coatcheck.keys import JWE_A256GCM, KeyRing
from coatcheck.session import Session
from coatcheck.tokens import b64encode
from coatcheck.verify import Verifier
from helpers import COOKIE, FakeClock, client

ALGS = ["EdDSA", "ES256"]
JWKS_PATH = "/.well-known/jwks.json"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(signature)}"


def ring_of(alg: str, count: int = 1) -> KeyRing:
    return KeyRing.generate(count, algorithm=alg)


# -- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_key_text_as_jwk_or_pem_loads_and_kid_is_the_rfc7638_thumbprint(alg: str) -> None:
    key = generate_signing_key(alg)
    jwk_text = json.dumps(key.private_jwk())
    pem = key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    for text in (jwk_text, pem, f"# a comment\n{pem}\n", f"{jwk_text},{jwk_text[:0]}"):
        ring = KeyRing.parse(text)
        assert ring.signing_algorithm == alg
        assert [k.kid for k in ring.signing_keys()] == [key.kid]
    expected = jwcrypto_jwk.JWK(**key.public.jwk()).thumbprint()
    assert key.kid == expected
    assert key.kid == thumbprint(
        {k: v for k, v in key.public.jwk().items() if k not in ("kid", "alg", "use")}
    )


def test_signing_and_symmetric_keys_mix_and_rotate_newest_first() -> None:
    new, old = generate_signing_key("EdDSA"), generate_signing_key("ES256")
    symmetric = base64.urlsafe_b64encode(b"k" * 32).decode()
    text = f"{json.dumps(new.private_jwk())}\n{symmetric}\n{json.dumps(old.private_jwk())}"
    ring = KeyRing.parse(text)
    assert [(k.kid, k.is_current) for k in ring.signing_keys()] == [
        (new.kid, True),
        (old.kid, False),
    ]
    assert len(ring) == 1  # the symmetric key keeps its subkeys, as before
    assert ring.signing_algorithm == "EdDSA"


def test_a_signing_key_alone_gives_the_ring_its_symmetric_subkeys() -> None:
    key = generate_signing_key("EdDSA")
    one, two = KeyRing.parse(json.dumps(key.private_jwk())), KeyRing((), signing=[key])
    assert one.current(JWE_A256GCM).secret == two.current(JWE_A256GCM).secret
    other = KeyRing((), signing=[generate_signing_key("EdDSA")])
    assert other.current(JWE_A256GCM).secret != one.current(JWE_A256GCM).secret


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"kty":"OKP","crv":"Ed25519","x":"AAAA"}', "not a usable private JWK"),
        ('{"kty":"RSA","n":"AQAB"}', "not a usable private JWK"),
        ("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----", "PEM private"),
        ("{not json", "not a usable private JWK"),
    ],
)
def test_bad_signing_key_text_is_refused_without_repeating_it(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        KeyRing.parse(text, source="$COATCHECK_KEYS")
    assert "key 1" in str(info.value) and text not in str(info.value)


def test_a_jwk_whose_public_part_is_not_its_own_is_refused() -> None:
    one, two = generate_signing_key("EdDSA"), generate_signing_key("EdDSA")
    mixed = {**one.private_jwk(), "x": two.private_jwk()["x"]}
    with pytest.raises(ConfigurationError, match="does not match"):
        KeyRing.parse(json.dumps(mixed))


@pytest.mark.parametrize("alg", ALGS)
def test_jwks_holds_public_keys_only(alg: str) -> None:
    ring = ring_of(alg, 2)
    jwks = ring.jwks()
    assert len(jwks["keys"]) == 2
    for jwk in jwks["keys"]:
        assert jwk["alg"] == alg and jwk["use"] == "sig" and jwk["kty"] in ("OKP", "EC")
        assert "d" not in jwk and "k" not in jwk
    secret = ring.signing_keys()[0].private_jwk()["d"]
    assert secret not in repr(ring.signing_keys()) and secret not in repr(ring)
    with pytest.raises(ConfigurationError):
        AsymmetricJWSCodec(ring.signing_keys()).jwks(include_secret=True)


# -- the codec's refusals -------------------------------------------------------------------

CLAIMS = {"sid": "s" * 22, "sub": "alice", "iat": 1, "exp": 2**40, "idl": 2**40}


@pytest.mark.parametrize("alg", ALGS)
def test_round_trip_and_rotation(alg: str) -> None:
    old = ring_of(alg)
    token = AsymmetricJWSCodec(old.signing_keys()).encode(CLAIMS)
    rotated = KeyRing((), signing=[generate_signing_key(alg), *old.signing_keys()])
    codec = AsymmetricJWSCodec(rotated.signing_keys())
    decoded = codec.decode(token)
    assert decoded.claims == CLAIMS and decoded.is_current is False
    fresh = codec.decode(codec.encode(CLAIMS))
    assert fresh.is_current is True and fresh.kid == rotated.signing_keys()[0].kid


def test_mixed_algorithms_each_key_verifies_under_its_own_alg_only() -> None:
    ed, es = generate_signing_key("EdDSA"), generate_signing_key("ES256")
    ring = KeyRing((), signing=[ed, es])
    token = AsymmetricJWSCodec((ring.signing_keys()[1],)).encode(CLAIMS)  # ES256, old key
    assert AsymmetricJWSCodec(ring.signing_keys()).decode(token).is_current is False
    with pytest.raises(InvalidToken, match="unknown kid"):  # pinned: ES256 keys not used
        AsymmetricJWSCodec(ring.signing_keys(), algorithm="EdDSA").decode(token)
    with pytest.raises(ConfigurationError):
        AsymmetricJWSCodec(ring.signing_keys(), algorithm="ES256")  # the newest is EdDSA


def mac(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.sha256).digest()


def encode_header(**header: Any) -> str:
    return b64(json.dumps(header).encode())


def refusals(alg: str, ring: KeyRing) -> dict[str, str]:
    """Tokens every verifier of `ring` must refuse, by what is wrong with them."""
    key = ring.signing_keys()[0]
    good = AsymmetricJWSCodec(ring.signing_keys()).encode(CLAIMS)
    head, body, sig = good.split(".")
    public_jwk = key.public.jwk()
    public_pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = {"alg": "HS256", "kid": key.kid}
    hs_input = f"{b64(json.dumps(hs_header).encode())}.{body}".encode()
    confused = {
        # HS256 "signed" with the public key as the HMAC secret, in each form it is known by
        f"hs256-public-{i}": hs_input.decode() + "." + b64(mac(secret, hs_input))
        for i, secret in enumerate(
            [
                public_pem,
                json.dumps(public_jwk).encode(),
                base64.urlsafe_b64decode(public_jwk["x"] + "=="),
            ]
        )
    }
    other = "ES256" if alg == "EdDSA" else "EdDSA"
    return {
        **confused,
        "none": forge({"alg": "none", "kid": key.kid}, CLAIMS, b""),
        "none-empty-sig": f"{b64(json.dumps({'alg': 'none', 'kid': key.kid}).encode())}.{body}.",
        "other-alg": f"{b64(json.dumps({'alg': other, 'kid': key.kid}).encode())}.{body}.{sig}",
        "unknown-kid": f"{b64(json.dumps({'alg': alg, 'kid': 'nope'}).encode())}.{body}.{sig}",
        "no-kid": f"{b64(json.dumps({'alg': alg}).encode())}.{body}.{sig}",
        **{
            f"header-{name}": f"{encode_header(alg=alg, kid=key.kid, **{name: value})}.{body}.{sig}"
            for name, value in [
                ("jwk", public_jwk),
                ("jku", "https://evil.example/jwks.json"),
                ("x5u", "https://evil.example/cert"),
                ("crit", ["exp"]),
                ("b64", False),
            ]
        },
        "tampered-payload": f"{head}.{b64(json.dumps({**CLAIMS, 'sub': 'root'}).encode())}.{sig}",
        "tampered-signature": f"{head}.{body}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}",
        "short-signature": f"{head}.{body}.{sig[:-4]}",
        "padded-payload": f"{head}.{body}=.{sig}",
        "two-segments": f"{head}.{body}",
        "four-segments": f"{good}.x",
    }


@pytest.mark.parametrize("alg", ALGS)
def test_codec_refuses_what_hs256_refuses_and_algorithm_confusion(alg: str) -> None:
    ring = ring_of(alg)
    codec = AsymmetricJWSCodec(ring.signing_keys())
    verifier = Verifier(ring.jwks())
    for name, token in refusals(alg, ring).items():
        with pytest.raises(InvalidToken):
            codec.decode(token)
            pytest.fail(f"codec accepted {name}")
        with pytest.raises(InvalidToken):
            verifier.verify(token)
            pytest.fail(f"verifier accepted {name}")


# -- interop -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_pyjwt_and_jwcrypto_verify_coatcheck_tokens_with_the_published_set(alg: str) -> None:
    ring = ring_of(alg)
    token = AsymmetricJWSCodec(ring.signing_keys()).encode(CLAIMS)
    jwks = ring.jwks()
    # PyJWT, from the JWK set, algorithm pinned
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    assert jwt.decode(token, key.key, algorithms=[alg], options={"verify_exp": False}) == CLAIMS
    # jwcrypto
    keyset = jwcrypto_jwk.JWKSet.from_json(json.dumps(jwks))
    checked = jwcrypto_jwt.JWT(jwt=token, key=keyset, algs=[alg], check_claims=False)
    assert json.loads(checked.claims) == CLAIMS
    # a tampered token fails in both
    head, body, sig = token.split(".")
    bad = f"{head}.{b64(json.dumps({**CLAIMS, 'sub': 'root'}).encode())}.{sig}"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(bad, key.key, algorithms=[alg], options={"verify_exp": False})
    with pytest.raises(jwcrypto_jws.InvalidJWSSignature):
        one = keyset.get_key(jwt.get_unverified_header(token)["kid"])
        jwcrypto_jwt.JWT(jwt=bad, key=one, algs=[alg], check_claims=False)


@pytest.mark.parametrize("alg", ALGS)
def test_tokens_signed_by_pyjwt_and_jwcrypto_verify_in_coatcheck(alg: str) -> None:
    ring = ring_of(alg)
    signing = ring.signing_keys()[0]
    codec = AsymmetricJWSCodec(ring.signing_keys())
    verifier = Verifier(ring.jwks(), clock=lambda: 100.0)
    by_pyjwt = jwt.encode(CLAIMS, signing.private, algorithm=alg, headers={"kid": signing.kid})
    private = jwcrypto_jwk.JWK(**signing.private_jwk())
    made = jwcrypto_jwt.JWT(header={"alg": alg, "kid": signing.kid}, claims=CLAIMS)
    made.make_signed_token(private)
    by_jwcrypto = made.serialize()
    for token in (by_pyjwt, by_jwcrypto):
        assert codec.decode(token).claims == CLAIMS
        assert verifier.verify(token) == CLAIMS
    # PyJWT writes a "typ" header: parsed strictly, accepted. Alg confusion made with PyJWT
    # (HMAC keyed with the public key's raw bytes) is refused.
    raw_public = base64.urlsafe_b64decode(ring.jwks()["keys"][0]["x"] + "==")
    confused = jwt.encode(CLAIMS, raw_public, algorithm="HS256", headers={"kid": signing.kid})
    for check in (codec.decode, verifier.verify):
        with pytest.raises(InvalidToken):
            check(confused)
    # and a coatcheck token PyJWT re-signs with another key of the same type is refused
    stranger = generate_signing_key(alg)
    forged = jwt.encode(CLAIMS, stranger.private, algorithm=alg, headers={"kid": signing.kid})
    with pytest.raises(InvalidToken, match="bad signature"):
        codec.decode(forged)


# -- through HTTP ------------------------------------------------------------------------


def sess(request: Request) -> Session:
    session = request.scope["session"]
    assert isinstance(session, Session)
    return session


async def who(request: Request) -> Response:
    session = sess(request)
    return JSONResponse({"user": session.user, "data": dict(session), "id": session.id})


async def login(request: Request) -> Response:
    session = sess(request)
    session.login(request.query_params["user"])
    session["cart"] = ["coat"]
    return PlainTextResponse("ok")


def app_for(mode: ClientSide, clock: FakeClock, **options: Any) -> tuple[Any, SessionManager]:
    manager = SessionManager(
        mode,
        lifetimes=Lifetimes(renewal=15 * 60, idle=30 * 60),
        clock=clock,
        log_salt=b"test-salt",
    )
    app = Starlette(routes=[Route("/", who), Route("/login", login)])
    return SessionMiddleware(app, manager, jwks_path=JWKS_PATH, **options), manager


def store_url(kind: str, tmp_path: Path) -> str:
    return "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'sessions.db'}"


def header_of(token: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    return header


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("alg", ALGS)
async def test_sessions_over_http_login_read_renew_rotate_and_revoke(
    alg: str, kind: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    ring = ring_of(alg)
    url = store_url(kind, tmp_path)
    mode = ClientSide(ring, store=url)
    app, manager = app_for(mode, clock)
    async with client(app) as browser:
        assert (await browser.get("/login", params={"user": "alice"})).status_code == 200
        token = browser.cookies[COOKIE]
        assert header_of(token) == {"alg": alg, "kid": ring.signing_keys()[0].kid}
        answer = (await browser.get("/")).json()
        assert answer["user"] == "alice" and answer["data"] == {"cart": ["coat"]}
        # the public set the app serves verifies the token elsewhere, claims and all
        jwks = (await browser.get(JWKS_PATH)).json()
        claims = Verifier(jwks, clock=clock).verify(token)
        assert claims["sub"] == "alice" and claims["sid"] == answer["id"]
        # renewal: past the renewal age the next request is answered with a new token
        clock.advance(16 * 60)
        assert (await browser.get("/")).json()["user"] == "alice"
        renewed = browser.cookies[COOKIE]
        assert renewed != token
        assert Verifier(jwks, clock=clock).verify(renewed)["sub"] == "alice"
    # key rotation: a new key in front; the old token still opens, and is re-issued
    rotated = KeyRing((), signing=[generate_signing_key(alg), *ring.signing_keys()])
    if kind == "memory":
        rotated_mode = mode  # one process: the same store; rebuild only the codec
        rotated_mode.codec = AsymmetricJWSCodec(rotated.signing_keys())
    else:
        rotated_mode = ClientSide(rotated, store=url)
    app2, manager2 = app_for(rotated_mode, clock)
    async with client(app2) as browser:
        browser.cookies.set(COOKIE, renewed, domain="testserver.local", path="/")
        assert (await browser.get("/")).json()["user"] == "alice"
        reissued = browser.cookies[COOKIE]
        assert header_of(reissued)["kid"] == rotated.signing_keys()[0].kid
        jwks2 = (await browser.get(JWKS_PATH)).json()
        assert [k["kid"] for k in jwks2["keys"]] == [k.kid for k in rotated.signing_keys()]
        verifier = Verifier(jwks2, clock=clock, revocations=None)
        assert verifier.verify(reissued)["sub"] == "alice"
        # revocation: the admin ends the session; the app refuses it, and so does a
        # verifier that reads the same revocation store
        sid = verifier.verify(reissued)["sid"]
        if kind == "sqlite":
            downstream = Verifier(jwks2, clock=clock, revocations=url, staleness=0)
            assert downstream.verify(reissued)["sid"] == sid
        SessionAdmin(manager2).revoke(sid)
        clock.advance(1)
        assert (await browser.get("/")).json()["user"] is None
        if kind == "sqlite":
            with pytest.raises(InvalidToken, match="revoked"):
                downstream.verify(reissued)
        else:
            local = Verifier(jwks2, clock=clock, revocations=mode.revocations, staleness=0)
            with pytest.raises(InvalidToken, match="revoked"):
                local.verify(reissued)


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ALGS)
async def test_a_forged_or_confused_cookie_is_a_fresh_anonymous_session(
    alg: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="coatcheck.security")
    ring = ring_of(alg)
    app, _ = app_for(ClientSide(ring, store="memory://"), FakeClock())
    for name, token in refusals(alg, ring).items():
        caplog.clear()
        async with client(app) as browser:
            browser.cookies.set(COOKIE, token, domain="testserver.local", path="/")
            answer = await browser.get("/")
            assert answer.status_code == 200, name
            assert answer.json()["user"] is None, name
        events = [r for r in caplog.records if r.name == "coatcheck.security"]
        assert events and all(token not in r.getMessage() for r in events), name


# -- the JWK set endpoint -------------------------------------------------------------------


@pytest.mark.anyio
async def test_jwks_endpoint_serves_public_keys_with_caching_headers() -> None:
    ring = ring_of("EdDSA", 2)
    app, _ = app_for(ClientSide(ring, store="memory://"), FakeClock(), jwks_max_age=120)
    async with client(app) as browser:
        answer = await browser.get(JWKS_PATH)
        assert answer.status_code == 200
        assert answer.json() == json.loads(json.dumps(ring.jwks()))
        assert answer.headers["content-type"] == "application/jwk-set+json"
        assert answer.headers["cache-control"] == "public, max-age=120"
        assert "set-cookie" not in answer.headers  # no session loaded or issued
        etag = answer.headers["etag"]
        again = await browser.get(JWKS_PATH, headers={"if-none-match": f'W/{etag}, "x"'})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        head = await browser.head(JWKS_PATH)
        assert head.status_code == 200 and head.content == b""
        post = await browser.post(JWKS_PATH)
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
        for secret in ('"d"', '"k"'):
            assert secret not in answer.text


def test_jwks_path_needs_an_asymmetric_mode() -> None:
    for mode in (
        ClientSide(KeyRing.generate(), store=None),
        ClientSide(KeyRing.generate(algorithm="EdDSA"), store=None, encrypted=True),
    ):
        with pytest.raises(ConfigurationError, match="jwks_path"):
            SessionMiddleware(Starlette(), SessionManager(mode), jwks_path=JWKS_PATH)


def test_wsgi_middleware_serves_the_set_too() -> None:
    from werkzeug.test import Client

    ring = ring_of("ES256")
    manager = SessionManager(ClientSide(ring, store=None))

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    wsgi = Client(WSGISessionMiddleware(app, manager, jwks_path=JWKS_PATH))
    answer = wsgi.get(JWKS_PATH)
    assert answer.status_code == 200 and answer.json == json.loads(json.dumps(ring.jwks()))
    assert answer.headers["Cache-Control"] == "public, max-age=300"
    assert wsgi.get(JWKS_PATH, headers={"If-None-Match": answer.headers["ETag"]}).status_code == 304
    assert wsgi.get("/").get_data() == b"app"


# -- configuration -------------------------------------------------------------------------


def test_clientside_algorithm_is_fixed_by_configuration() -> None:
    ed = KeyRing.generate(algorithm="EdDSA")
    assert isinstance(ClientSide(ed, store=None).codec, AsymmetricJWSCodec)
    assert "HS256" in repr(ClientSide(ed, store=None, algorithm="HS256").codec)
    with pytest.raises(ConfigurationError):
        ClientSide(ed, store=None, algorithm="ES256")
    with pytest.raises(ConfigurationError):
        ClientSide(KeyRing.generate(), store=None, algorithm="EdDSA")
    with pytest.raises(ConfigurationError):
        ClientSide(ed, store=None, algorithm="none")
    with pytest.raises(ConfigurationError):
        ClientSide(ed, store=None, algorithm="EdDSA", encrypted=True)


def test_token_sizes_per_algorithm() -> None:
    """Report (printed with -s) the cookie cost of a typical logged-in session's token."""
    import time

    from coatcheck.tokens import JWSCodec

    claims = {
        "sid": "A" * 22,
        "sub": "alice@example.com",
        "iat": time.time(),
        "exp": 2e9,
        "idl": 2e9,
        "auth_time": 1.7e9,
        "rot": 1.7e9,
        "dat": {"cart": ["coat"]},
        "csrf": "c" * 43,
    }
    sizes = {"HS256": len(JWSCodec(KeyRing.generate()).encode(claims))}
    for alg in ALGS:
        sizes[alg] = len(AsymmetricJWSCodec(ring_of(alg).signing_keys()).encode(claims))
    print(sizes)
    assert sizes["EdDSA"] == sizes["ES256"]  # same header length, 64-byte signatures both
    assert sizes["EdDSA"] - sizes["HS256"] < 100
    assert b64encode(b"x")  # keep the import honest


# -- Flask ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_flask_client_side_sessions_with_signing_keys(alg: str, tmp_path: Path) -> None:
    from flask import Flask, jsonify, session

    from coatcheck.adapters.flask import SessionInterface

    clock = FakeClock()
    ring = ring_of(alg)
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    manager = SessionManager(ClientSide(ring, store=url), clock=clock, log_salt=b"salt")
    app = Flask(__name__)
    SessionInterface(manager).init_app(app)

    @app.get("/login")
    def sign_in() -> str:
        session["cart"] = ["coat"]
        session.login("alice")  # type: ignore[attr-defined]  # coatcheck's FlaskSession
        return "ok"

    @app.get("/")
    def read() -> Any:
        return jsonify(cart=session.get("cart"))

    @app.get(JWKS_PATH)
    def jwks() -> Any:
        return jsonify(ring.jwks())

    browser = app.test_client()
    assert browser.get("/login").status_code == 200
    cookie = browser.get_cookie(COOKIE)
    assert cookie is not None
    token = cookie.value
    assert header_of(token)["alg"] == alg
    assert browser.get("/").get_json() == {"cart": ["coat"]}
    verifier = Verifier(browser.get(JWKS_PATH).get_json(), clock=clock, revocations=url)
    sid = verifier.verify(token)["sid"]
    assert verifier.verify(token)["sub"] == "alice"
    SessionAdmin(manager).revoke(sid)
    clock.advance(2)
    with pytest.raises(InvalidToken, match="revoked"):
        verifier.verify(token)
    assert browser.get("/").get_json() == {"cart": None}


def test_an_hs256_codec_over_a_ring_with_signing_keys_lists_its_own_keys() -> None:
    from coatcheck.tokens import JWSCodec

    symmetric = base64.urlsafe_b64encode(b"k" * 32).decode()
    ring = KeyRing.parse(f"{json.dumps(generate_signing_key('EdDSA').private_jwk())}\n{symmetric}")
    (hs,) = JWSCodec(ring).jwks()["keys"]
    assert hs["alg"] == "HS256" and "k" not in hs
    assert [k["alg"] for k in ring.jwks()["keys"]] == ["EdDSA"]
