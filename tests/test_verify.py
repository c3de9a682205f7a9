"""`coatcheck.verify.Verifier`: a downstream service verifies EdDSA / ES256 session tokens
with the public JWK set only, from a dict, a file or the owner's URL (a real uvicorn server
on a loopback port); claims and deadlines with leeway; the key cache and its rate-limited
refresh on an unknown `kid`; revocations read from the owner's store."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from coatcheck import SessionManager
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.asymmetric import AsymmetricJWSCodec, generate_signing_key
from coatcheck.clientside import ClientSide
from coatcheck.exceptions import ConfigurationError, InvalidToken, StoreUnavailable
from coatcheck.keys import KeyRing
from coatcheck.revocation import CHANGES_PAGE, Revocation
from coatcheck.stores import MemoryRevocationStore
from coatcheck.verify import Verifier
from faults import SwitchRevocations
from helpers import T0, FakeClock

CLAIMS: dict[str, Any] = {
    "sid": "s" * 22,
    "sub": "alice",
    "iat": T0,
    "exp": T0 + 3600,
    "idl": T0 + 600,
}


def token_for(ring: KeyRing, **claims: Any) -> str:
    return AsymmetricJWSCodec(ring.signing_keys()).encode({**CLAIMS, **claims})


class CountingFetch:
    """A JWK set source that counts its fetches and can be switched or broken."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self.jwks, self.calls, self.broken = jwks, 0, False

    def __call__(self) -> Mapping[str, Any]:
        self.calls += 1
        if self.broken:
            raise OSError("connection refused")
        return self.jwks


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_claims_and_deadlines_with_leeway(alg: str) -> None:
    ring = KeyRing.generate(algorithm=alg)
    clock = FakeClock()
    verifier = Verifier(ring.jwks(), clock=clock, leeway=5)
    assert verifier.verify(token_for(ring)) == CLAIMS
    clock.advance(600 + 4)  # idle deadline passed by less than the leeway
    assert verifier.verify(token_for(ring))["sub"] == "alice"
    clock.advance(2)
    with pytest.raises(InvalidToken, match="idle deadline"):
        verifier.verify(token_for(ring))
    with pytest.raises(InvalidToken, match="future"):
        verifier.verify(token_for(ring, iat=clock.now + 60, idl=clock.now + 600))
    with pytest.raises(InvalidToken, match="not yet valid"):
        verifier.verify(token_for(ring, nbf=clock.now + 60, idl=clock.now + 600))
    with pytest.raises(InvalidToken, match="absolute deadline"):
        verifier.verify(token_for(ring, exp=clock.now - 10, idl=clock.now + 600))
    with pytest.raises(InvalidToken, match="missing"):
        verifier.verify(
            AsymmetricJWSCodec(ring.signing_keys()).encode({"sid": "x", "sub": "alice"})
        )


def test_configuration_refusals() -> None:
    ring = KeyRing.generate(algorithm="EdDSA")
    for algorithms in (["HS256"], ["none"], [], ["EdDSA", "RS256"]):
        with pytest.raises(ConfigurationError):
            Verifier(ring.jwks(), algorithms=algorithms)
    private = {"keys": [ring.signing_keys()[0].private_jwk()]}
    with pytest.raises(ConfigurationError, match="private or secret"):
        Verifier(private)
    with pytest.raises(ConfigurationError, match="private or secret"):
        Verifier(KeyRing.generate().jwks(include_secret=True))
    with pytest.raises(ConfigurationError, match="'keys' list"):
        Verifier({"kty": "OKP"})
    with pytest.raises(ConfigurationError):
        Verifier()


def test_a_set_with_foreign_keys_uses_only_its_own_kind() -> None:
    ring = KeyRing.generate(algorithm="ES256")
    foreign = {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"}
    oct_public = {"kty": "oct", "kid": "h", "alg": "HS256", "use": "sig"}
    verifier = Verifier({"keys": [foreign, oct_public, *ring.jwks()["keys"]]}, clock=FakeClock())
    assert list(verifier.public_keys()) == [ring.signing_keys()[0].kid]
    assert verifier.verify(token_for(ring))["sub"] == "alice"
    only_ed = Verifier(ring.jwks(), algorithms=["EdDSA"], clock=FakeClock())
    with pytest.raises(InvalidToken, match="unknown kid"):
        only_ed.verify(token_for(ring))


def test_unknown_kid_refetches_at_most_once_per_min_refresh() -> None:
    old = KeyRing.generate(algorithm="EdDSA")
    clock = FakeClock()
    source = CountingFetch(old.jwks())
    verifier = Verifier(fetch=source, clock=clock, min_refresh=30, max_age=300)
    assert source.calls == 1
    rotated = KeyRing((), signing=[generate_signing_key("EdDSA"), *old.signing_keys()])
    # before the owner publishes: refused, one refetch, then none for 30 s (the first
    # load counts as a fetch)
    clock.advance(30)
    stranger = KeyRing.generate(algorithm="EdDSA")
    for _ in range(5):
        with pytest.raises(InvalidToken, match="unknown kid"):
            verifier.verify(token_for(stranger))
    assert source.calls == 2
    source.jwks = rotated.jwks()
    with pytest.raises(InvalidToken, match="unknown kid"):  # still rate-limited
        verifier.verify(token_for(rotated))
    assert source.calls == 2
    clock.advance(30)
    assert verifier.verify(token_for(rotated))["sub"] == "alice"  # refetched at once
    assert source.calls == 3
    assert verifier.verify(token_for(old))["sub"] == "alice"  # older keys still verify
    # the cache is refreshed every max_age; a failed fetch keeps the keys held
    source.broken = True
    clock.advance(300)
    assert verifier.verify(token_for(rotated, idl=clock.now + 60))["sub"] == "alice"
    assert source.calls == 4


def test_from_jwks_file(tmp_path: Path) -> None:
    ring = KeyRing.generate(algorithm="ES256")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(ring.jwks()))
    verifier = Verifier.from_jwks_file(path, clock=FakeClock())
    assert verifier.verify(token_for(ring))["sub"] == "alice"
    with pytest.raises(ConfigurationError, match="cannot load"):
        Verifier.from_jwks_file(tmp_path / "missing.json")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def owner() -> Iterator[tuple[str, ClientSide]]:
    """The owner app, served by uvicorn on a loopback port with its JWK set published."""
    mode = ClientSide(KeyRing.generate(algorithm="EdDSA"), store=None)
    app = SessionMiddleware(Starlette(), SessionManager(mode), jwks_path="/.well-known/jwks.json")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(500):
        if server.started:
            started.set()
            break
        threading.Event().wait(0.01)
    assert started.is_set(), "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}/.well-known/jwks.json", mode
    finally:
        server.should_exit = True
        thread.join(10)


def test_from_jwks_url_against_a_real_server(owner: tuple[str, ClientSide]) -> None:
    url, mode = owner
    verifier = Verifier.from_jwks_url(url, clock=FakeClock())
    token = mode.codec.encode(CLAIMS)
    assert verifier.verify(token) == CLAIMS
    assert list(verifier.public_keys()) == [mode.keys.signing_keys()[0].kid]
    with pytest.raises(ConfigurationError, match="cannot load"):
        Verifier.from_jwks_url(url.replace("jwks.json", "nothing"))
    with pytest.raises(ConfigurationError, match="http"):
        Verifier.from_jwks_url("file:///etc/passwd")


def test_revocations_from_the_owners_store_and_their_staleness_bound() -> None:
    ring = KeyRing.generate(algorithm="EdDSA")
    clock = FakeClock()
    store = MemoryRevocationStore()
    verifier = Verifier(ring.jwks(), clock=clock, revocations=store, staleness=1, max_staleness=10)
    token = token_for(ring)
    assert verifier.verify(token)["sid"] == CLAIMS["sid"]
    store.revoke(Revocation("sid", CLAIMS["sid"], clock.now, clock.now + 3600))
    assert verifier.verify(token)  # within staleness: the copy is not due yet
    clock.advance(1)
    with pytest.raises(InvalidToken, match="revoked"):
        verifier.verify(token)
    # "log out everywhere" for the user covers a token of another session
    store.revoke(Revocation("user", "alice", clock.now, clock.now + 3600))
    clock.advance(1)
    with pytest.raises(InvalidToken, match="revoked"):
        verifier.verify(token_for(ring, sid="t" * 22, idl=clock.now + 60))


def test_an_unreachable_revocation_store_is_refused_past_max_staleness() -> None:
    class Down(MemoryRevocationStore):
        down = False

        def changes(self, cursor: int) -> tuple[list[Revocation], int]:
            if self.down:
                raise StoreUnavailable("down")
            return super().changes(cursor)

    ring = KeyRing.generate(algorithm="EdDSA")
    clock = FakeClock()
    store = Down()
    verifier = Verifier(ring.jwks(), clock=clock, revocations=store, staleness=1, max_staleness=10)
    verifier.verify(token_for(ring))
    store.down = True
    clock.advance(5)
    assert verifier.verify(token_for(ring))  # the copy is 5 s old: still trusted
    clock.advance(5)
    with pytest.raises(StoreUnavailable):
        verifier.verify(token_for(ring, idl=clock.now + 60))


def test_a_revocation_pages_behind_is_seen_and_a_failed_page_keeps_the_ones_before() -> None:
    """The verifier polls page by page (`CHANGES_PAGE`), as the driver does: a revocation
    two pages behind is seen in one poll; when a page fails, the pages before it stay
    applied and the next poll goes on from there, with the copy's age unchanged."""

    ring = KeyRing.generate(algorithm="EdDSA")
    clock = FakeClock()
    store = SwitchRevocations(clock=clock)
    verifier = Verifier(ring.jwks(), clock=clock, revocations=store, staleness=1, max_staleness=60)
    token = token_for(ring)
    verifier.verify(token)
    synced_at = clock.now
    for i in range(2 * CHANGES_PAGE):
        store.revoke(Revocation("sid", f"other-{i}", clock.now, clock.now + 3600))
    store.revoke(Revocation("sid", CLAIMS["sid"], clock.now, clock.now + 3600))
    store.answers, store.cursors = 1, []
    clock.advance(1)
    assert verifier.verify(token)  # page 1 applied, page 2 failed: served from the copy
    assert store.cursors == [0, CHANGES_PAGE]
    assert verifier.revocation_list.cursor == CHANGES_PAGE
    assert verifier.revocation_list.synced_at == synced_at
    store.answers, store.cursors = None, []
    with pytest.raises(InvalidToken, match="revoked"):
        verifier.verify(token)  # still due: goes on from page 2, the third page holds it
    assert store.cursors == [CHANGES_PAGE, 2 * CHANGES_PAGE]
    assert verifier.revocation_list.synced_at == clock.now


def test_revocation_check_needs_a_numeric_iat_even_when_not_required() -> None:
    ring = KeyRing.generate(algorithm="EdDSA")
    verifier = Verifier(
        ring.jwks(), clock=FakeClock(), required=(), revocations=MemoryRevocationStore()
    )
    token = AsymmetricJWSCodec(ring.signing_keys()).encode({"sid": "s" * 22, "sub": "alice"})
    with pytest.raises(InvalidToken, match="wrong types"):
        verifier.verify(token)
    assert Verifier(ring.jwks(), required=()).verify(token)["sub"] == "alice"
